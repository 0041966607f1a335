"""Offline studies (sizing, ablations) whose reports are committed under models/reports/."""
