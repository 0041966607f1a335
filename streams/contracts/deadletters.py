"""Dead letters that always fit in a produce request, whatever the input that caused them.

A dead letter carries the bad input's bytes so it can be inspected and replayed. An input can
be as large as the broker accepts (1 MiB by default, more where configured), and a dead letter
around it would be larger still than the producer's ``max.request.size``: sending it would
fail, and the stage that tried would crash. So the bytes are cut at :data:`RAW_LIMIT` and the
record says so: the original length and its sha256 (enough to match the input on the source
topic, or to prove a replayed copy is the same input). Keys and the detail text are cut too.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

#: Bytes of the input kept (well under any producer's max request size, 1 MiB by default).
RAW_LIMIT: Final = 64 * 1024
#: Bytes of the record key kept.
KEY_LIMIT: Final = 1024
#: Characters of the explanation kept.
DETAIL_LIMIT: Final = 2000


def bounded_payload(raw: bytes, raw_key: bytes | None, detail: str) -> dict[str, Any]:
    """The ``raw``/``raw_key``/``detail`` fields of a ``DeadLettered``, cut to the limits.

    ``raw_length``/``raw_sha256`` (and ``raw_key_length``, ``detail_length``) are None unless
    something was cut, so a complete dead letter reads as before.
    """
    raw = bytes(raw)
    # Avro strings are UTF-8: an error message quoting undecodable input must still encode.
    detail = detail.encode("utf-8", "replace").decode("utf-8")
    fields: dict[str, Any] = {
        "raw": raw, "raw_key": raw_key, "detail": detail,
        "raw_length": None, "raw_sha256": None, "raw_key_length": None, "detail_length": None,
    }  # fmt: skip
    if len(raw) > RAW_LIMIT:
        fields["raw"] = raw[:RAW_LIMIT]
        fields["raw_length"] = len(raw)
        fields["raw_sha256"] = hashlib.sha256(raw).hexdigest()
    if raw_key is not None and len(raw_key) > KEY_LIMIT:
        fields["raw_key"] = bytes(raw_key[:KEY_LIMIT])
        fields["raw_key_length"] = len(raw_key)
    if len(detail) > DETAIL_LIMIT:
        fields["detail"] = detail[:DETAIL_LIMIT]
        fields["detail_length"] = len(detail)
    return fields
