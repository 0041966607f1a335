"""Errors of the contracts layer, each carrying the context a user needs to act on it."""

from __future__ import annotations


class ContractsError(Exception):
    """Base of every error raised by ``streams.contracts``."""


class SchemaLoadError(ContractsError):
    """A schema file is missing, is not JSON, or is not a valid Avro schema."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ContractError(ContractsError):
    """A record broke its topic's contract while being produced or consumed.

    ``field_path`` is dotted (``votes[2].confidence``); empty when the record as a whole is at
    fault (wire format, unknown schema id).
    """

    def __init__(
        self,
        *,
        topic: str,
        subject: str,
        reason: str,
        field_path: str = "",
        direction: str = "produce",
        schema_id: int | None = None,
    ) -> None:
        self.topic = topic
        self.subject = subject
        self.reason = reason
        self.field_path = field_path
        self.direction = direction
        self.schema_id = schema_id
        where = f" at field '{field_path}'" if field_path else ""
        sid = f" (schema id {schema_id})" if schema_id is not None else ""
        super().__init__(f"{direction} {topic} [{subject}{sid}]{where}: {reason}")


class RegistryError(ContractsError):
    """The schema registry (file or HTTP) failed or does not know a subject, version or id."""


class UnreleasedSchemaError(RegistryError):
    """``schemas/<topic>.avsc`` differs from every registered version of its subject."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(
            f"schema of {subject} is not registered: the .avsc changed since the last release; "
            "run `quantum-trader schemas check` then `quantum-trader schemas release`"
        )


class IncompatibleSchemaError(RegistryError):
    """A new schema version cannot read data written with an earlier version (BACKWARD)."""

    def __init__(self, subject: str, problems: list[str]) -> None:
        self.subject = subject
        self.problems = problems
        super().__init__(f"{subject} is not BACKWARD compatible: " + "; ".join(problems))
