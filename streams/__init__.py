"""Quantum Trader runtime: the Faust app, its agents and the edges (brokers, venues, journal)."""
