"""Client order ids for Binance, derived from our order ids (never random).

Binance accepts ``newClientOrderId`` / ``clientAlgoId`` matching ``^[.A-Z:/a-z0-9_-]{1,36}$``.
Our order ids (``BTCUSDT:1747785600000:decision:entry``, :func:`streams.ids.order_id`) are used
with ``:`` written as ``.`` (``BTCUSDT.1747785600000.decision.entry``), so the exchange's order
list reads like our journal: ``:`` and ``/`` are allowed by the rule but percent-encoded in a form
body, and Binance checks the signature over the bytes sent while python-binance signs the
unencoded values (-1022 on every order; the fake exchange checks it the same way). Longer ids (a
longer symbol, a later leg version) drop the ``decision`` part, and if that is not enough become
``q`` + 20 base32 characters of the order id's SHA-256 + ``.`` + the leg: still deterministic, so a
redelivered intent or a restarted worker asks the exchange for the same id before sending it again
(the lookup the gateway does), and two different order ids never share one (2^100 hashes).
"""

from __future__ import annotations

import base64
import hashlib
import re

CLIENT_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
#: The subset that survives form encoding unchanged (what we send).
_SAFE = re.compile(r"^[\.A-Za-z0-9_-]{1,36}$")
MAX_LENGTH = 36


def is_valid_client_id(client_id: str) -> bool:
    """Whether Binance accepts ``client_id`` as a client order id."""
    return CLIENT_ID_PATTERN.fullmatch(client_id) is not None


def client_order_id(order_id: str) -> str:
    """The client order id of our order ``order_id`` (see the module doc)."""
    if "." not in order_id:  # "." is our stand-in for ":": only unambiguous when absent
        dotted = order_id.replace(":", ".")
        if _SAFE.fullmatch(dotted):
            return dotted
        short = dotted.replace(".decision.", ".")
        if _SAFE.fullmatch(short):
            return short
    leg = re.sub(r"[^A-Za-z0-9_-]", "", order_id.rsplit(":", 1)[-1])[:12]
    digest = base64.b32encode(hashlib.sha256(order_id.encode()).digest()).decode().lower()
    return f"q{digest[:20]}.{leg}" if leg else f"q{digest[:32]}"
