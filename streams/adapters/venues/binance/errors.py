"""What a Binance error means for an order, and the venue's own exceptions.

Every error code that can happen to an order maps to one :class:`ErrorAction`: a permanent
rejection (the leg becomes a rejection event with the code and message), a transient failure
(retry after a backoff), an unknown outcome (the request may have been executed: look the client
id up before anything else), a duplicate (the order exists already: adopt it), a harmless no-op,
or a fatal configuration error (wrong key or environment: stop and say so).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorAction(StrEnum):
    """What the gateway does after an error."""

    REJECT = "REJECT"  # permanent: the order will never be accepted as it is
    RETRY = "RETRY"  # transient: send again after a backoff
    LOOKUP = "LOOKUP"  # outcome unknown: query the client id before re-sending
    EXISTS = "EXISTS"  # the client id is already on the exchange
    IGNORE = "IGNORE"  # nothing to change (margin type already set, ...)
    FATAL = "FATAL"  # key/permissions/environment: no order can succeed


@dataclass(frozen=True, slots=True)
class BinanceCode:
    """One documented error code."""

    code: int
    name: str
    action: ErrorAction
    hint: str = ""


_CODES = (
    BinanceCode(-1000, "UNKNOWN", ErrorAction.LOOKUP, "unknown error while processing"),
    BinanceCode(-1001, "DISCONNECTED", ErrorAction.LOOKUP, "internal error; retry"),
    BinanceCode(-1003, "TOO_MANY_REQUESTS", ErrorAction.RETRY, "rate limit: back off"),
    BinanceCode(-1007, "TIMEOUT", ErrorAction.LOOKUP, "backend timeout: status unknown"),
    BinanceCode(-1008, "SERVER_BUSY", ErrorAction.RETRY, "server overloaded"),
    BinanceCode(-1013, "INVALID_MESSAGE", ErrorAction.REJECT, "a filter refused the order"),
    BinanceCode(-1015, "TOO_MANY_ORDERS", ErrorAction.RETRY, "order rate limit: back off"),
    BinanceCode(-1021, "INVALID_TIMESTAMP", ErrorAction.RETRY, "clock skew: resync time"),
    BinanceCode(-1022, "INVALID_SIGNATURE", ErrorAction.FATAL, "API secret does not match"),
    BinanceCode(-1102, "MANDATORY_PARAM_EMPTY_OR_MALFORMED", ErrorAction.REJECT),
    BinanceCode(-1106, "PARAM_NOT_REQUIRED", ErrorAction.REJECT),
    BinanceCode(-1111, "BAD_PRECISION", ErrorAction.REJECT, "more decimals than allowed"),
    BinanceCode(-1116, "INVALID_ORDER_TYPE", ErrorAction.REJECT),
    BinanceCode(-1121, "BAD_SYMBOL", ErrorAction.REJECT),
    BinanceCode(-1125, "INVALID_LISTEN_KEY", ErrorAction.RETRY, "listenKey expired: recreate"),
    BinanceCode(-2008, "BAD_API_ID", ErrorAction.FATAL, "key unknown in this environment"),
    BinanceCode(-2010, "NEW_ORDER_REJECTED", ErrorAction.REJECT),
    BinanceCode(-2011, "CANCEL_REJECTED", ErrorAction.IGNORE, "nothing to cancel"),
    BinanceCode(-2013, "NO_SUCH_ORDER", ErrorAction.IGNORE, "order does not exist"),
    BinanceCode(-2014, "BAD_API_KEY_FMT", ErrorAction.FATAL, "API key format invalid"),
    BinanceCode(-2015, "REJECTED_MBX_KEY", ErrorAction.FATAL, "key, IP or permissions"),
    BinanceCode(-2018, "BALANCE_NOT_SUFFICIENT", ErrorAction.REJECT),
    BinanceCode(-2019, "MARGIN_NOT_SUFFICIEN", ErrorAction.REJECT, "margin is insufficient"),
    BinanceCode(-2020, "UNABLE_TO_FILL", ErrorAction.REJECT),
    BinanceCode(-2021, "ORDER_WOULD_IMMEDIATELY_TRIGGER", ErrorAction.REJECT),
    BinanceCode(-2022, "REDUCE_ONLY_REJECT", ErrorAction.REJECT),
    BinanceCode(-2025, "MAX_OPEN_ORDER_EXCEEDED", ErrorAction.REJECT),
    BinanceCode(-2027, "MAX_LEVERAGE_RATIO", ErrorAction.REJECT, "position too large for leverage"),
    BinanceCode(-2028, "MIN_LEVERAGE_RATIO", ErrorAction.REJECT),
    BinanceCode(-4003, "QTY_LESS_THAN_ZERO", ErrorAction.REJECT),
    BinanceCode(-4005, "QTY_GREATER_THAN_MAX_QTY", ErrorAction.REJECT),
    BinanceCode(-4014, "PRICE_NOT_INCREASED_BY_TICK_SIZE", ErrorAction.REJECT),
    BinanceCode(-4015, "INVALID_CL_ORD_ID_LEN", ErrorAction.REJECT),
    BinanceCode(-4028, "INVALID_LEVERAGE", ErrorAction.REJECT),
    BinanceCode(-4046, "NO_NEED_TO_CHANGE_MARGIN_TYPE", ErrorAction.IGNORE),
    BinanceCode(-4047, "THERE_EXISTS_OPEN_ORDERS", ErrorAction.IGNORE, "margin type kept"),
    BinanceCode(-4048, "THERE_EXISTS_QUANTITY", ErrorAction.IGNORE, "margin type kept"),
    BinanceCode(-4059, "NO_NEED_TO_CHANGE_POSITION_SIDE", ErrorAction.IGNORE),
    BinanceCode(-4061, "INVALID_POSITION_SIDE", ErrorAction.REJECT, "hedge mode is not supported"),
    BinanceCode(-4116, "DUPLICATED_CLIENT_ORDER_ID", ErrorAction.EXISTS),
    BinanceCode(-4131, "MARKET_ORDER_REJECT", ErrorAction.REJECT, "PERCENT_PRICE"),
    BinanceCode(-4164, "MIN_NOTIONAL", ErrorAction.REJECT, "notional under the minimum"),
)
CODES: dict[int, BinanceCode] = {c.code: c for c in _CODES}


def action_for(code: int, http_status: int) -> ErrorAction:
    """What to do after error ``code`` (HTTP 5xx without a known code: outcome unknown)."""
    known = CODES.get(code)
    if known is not None:
        return known.action
    if http_status in (429, 418):
        return ErrorAction.RETRY
    if http_status >= 500:
        return ErrorAction.LOOKUP
    return ErrorAction.REJECT


def describe(code: int, message: str) -> str:
    """``-2019 MARGIN_NOT_SUFFICIEN: Margin is insufficient.`` (for rejection events)."""
    known = CODES.get(code)
    name = f" {known.name}" if known else ""
    return f"{code}{name}: {message}"


class VenueError(Exception):
    """Base of the venue's errors: the message says what to do."""


class VenueConfigError(VenueError):
    """Key, secret, endpoint or account setup is wrong; no order can succeed until fixed."""


class VenueBanned(VenueError):
    """HTTP 418: the IP is banned for a while; every request stops until ``until_ms``."""

    def __init__(self, until_ms: int, message: str) -> None:
        super().__init__(message)
        self.until_ms = until_ms
