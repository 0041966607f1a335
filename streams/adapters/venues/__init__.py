"""Execution venues: the interface (``interface``) and the paper venue (``paper``).

A testnet venue (issue 11) goes here behind the same interface.
"""
