"""Execution venues: the interface (``interface``), the paper venue (``paper``) and Binance USD-M
futures testnet (``binance``: the venue state machine, its gateway, the local fake exchange;
docs/venues.md).
"""
