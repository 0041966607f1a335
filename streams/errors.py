"""The exceptions of the stages: a broken input to a rule, or a record a stage cannot process."""

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


class LogicError(Exception):
    """Base of every error raised by the pure trading logic."""


class InvalidInputError(LogicError, ValueError):
    """An input violates the contract of a logic function; the message names the field."""

    def __init__(self, what: str, value: object, expected: str) -> None:
        super().__init__(f"invalid {what}: {value!r} (expected {expected})")
        self.what = what
        self.value = value
        self.expected = expected
