"""The one exception type of the stage processors, carrying the record that caused it."""

from __future__ import annotations


class StageError(Exception):
    """A stage cannot process a record (a broken contract, a misconfigured stage).

    ``stage`` names the processor (``ensemble``, ``risk``...) and ``key`` the record identity
    (symbol, signal or decision id) so a dead letter or a log line points at the input.
    """

    def __init__(self, stage: str, key: str, message: str) -> None:
        super().__init__(f"{stage} [{key}]: {message}")
        self.stage = stage
        self.key = key
