"""The Avro codec of the topology: Confluent wire format, validated both ways.

Wire format (what Confluent's serializers and every registry-aware consumer expect)::

    byte 0     magic byte 0
    bytes 1-4  schema id, big-endian unsigned 32-bit
    bytes 5-   Avro binary body (schemaless)

Produce: the record (a mapping or an :class:`~streams.contracts.base.AvroRecord`) is validated
against the topic's current schema (field path on failure), then written with the id the
registry gave that exact schema. Consume: magic byte, known id, writer schema with the topic's
record name, body decoded with Avro schema resolution (writer schema -> current reader schema,
so old data reads with the new schema's defaults), no trailing bytes, then the decoded record
is validated like on produce. Every failure is a :class:`ContractError` naming the topic,
subject, schema id and field path.

Everything per topic is resolved once and cached (parsed schemas, validators, id header).
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer
from faust.serializers.codecs import Codec

from streams.contracts.base import AvroRecord
from streams.contracts.errors import ContractError, ContractsError, UnreleasedSchemaError
from streams.contracts.records import record_type
from streams.contracts.registry import SchemaRegistry, registry_from_settings
from streams.contracts.schema_loader import (
    SCHEMAS_DIR,
    ParsedSchema,
    TopicSchema,
    load_topic_schema,
    parse_schema_text,
)
from streams.contracts.validation import Check, Violation, compile_validator
from streams.topics import Topic

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")  # magic byte, schema id
Serializer = Callable[[Mapping[str, Any] | AvroRecord], bytes]
Deserializer = Callable[[bytes], Any]


def wire_header(schema_id: int) -> bytes:
    """The 5 bytes in front of every Avro body: magic byte 0 and the big-endian schema id."""
    return HEADER.pack(MAGIC_BYTE, schema_id)


def split_wire(data: bytes) -> tuple[int, memoryview]:
    """(schema id, body) of a Confluent-framed message; ValueError when not framed."""
    if len(data) < HEADER.size:
        raise ValueError(f"{len(data)} bytes is shorter than the 5-byte wire header")
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise ValueError(f"magic byte is {magic}, expected {MAGIC_BYTE} (not Confluent-framed)")
    return schema_id, memoryview(data)[HEADER.size :]


class TopicCodec:
    """Encoder/decoder of one topic's values against one registry (thread-safe reads)."""

    def __init__(
        self,
        topic: Topic | str,
        registry: SchemaRegistry,
        *,
        schemas_dir: Any = SCHEMAS_DIR,
        auto_register: bool = False,
        validate_on_consume: bool = True,
    ) -> None:
        self.current: TopicSchema = load_topic_schema(topic, schemas_dir)
        self.topic = self.current.topic
        self.subject = self.current.subject
        self.registry = registry
        self.auto_register = auto_register
        self.validate_on_consume = validate_on_consume
        self.reader_schema: ParsedSchema = self.current.schema.parsed
        self.validator: Check = compile_validator(self.reader_schema)
        self.record_cls = record_type(self.topic)
        self._schema_id: int | None = None
        self._writers: dict[int, tuple[ParsedSchema, ParsedSchema | None]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ produce

    @property
    def schema_id(self) -> int:
        """Registry id of the current schema (looked up once; registered if allowed)."""
        if self._schema_id is None:
            with self._lock:
                self._schema_id = self._resolve_id()
        return self._schema_id

    def _resolve_id(self) -> int:
        text = self.current.schema.text
        found = self.registry.lookup(self.subject, text)
        if found is None and self.auto_register:
            found = self.registry.register(self.subject, text)
        if found is None:
            raise UnreleasedSchemaError(self.subject)
        return found.schema_id

    def encode(self, value: Mapping[str, Any] | AvroRecord) -> bytes:
        """Validate ``value`` and return header + Avro body."""
        datum = value.to_avro() if isinstance(value, AvroRecord) else value
        try:
            self.validator(datum)
        except Violation as exc:
            raise self._error(exc.reason, exc.path, "produce") from None
        header = wire_header(self.schema_id)
        out = io.BytesIO()
        out.write(header)
        try:
            schemaless_writer(out, self.reader_schema, datum, strict_allow_default=True)
        except (TypeError, ValueError, OverflowError) as exc:  # validator should prevent this
            raise self._error(f"avro writer: {exc}", "", "produce") from exc
        return out.getvalue()

    # ------------------------------------------------------------------ consume

    def decode(self, data: bytes) -> dict[str, Any]:
        """Check framing, resolve the writer schema by id, decode and validate."""
        try:
            schema_id, body = split_wire(data)
        except ValueError as exc:
            raise self._error(str(exc), "", "consume") from None
        writer, reader = self._schemas_for(schema_id)
        stream = io.BytesIO(body)
        try:
            datum = schemaless_reader(stream, writer, reader)
        except Exception as exc:  # fastavro: EOFError, IndexError, UnicodeDecodeError, ...
            reason = f"undecodable body at byte {stream.tell()}: {type(exc).__name__}: {exc}"
            raise self._error(reason, "", "consume", schema_id) from exc
        if stream.tell() != len(body):
            reason = f"{len(body) - stream.tell()} trailing bytes after the record"
            raise self._error(reason, "", "consume", schema_id)
        if self.validate_on_consume:
            try:
                self.validator(datum)
            except Violation as exc:
                raise self._error(exc.reason, exc.path, "consume", schema_id) from None
        return cast(dict[str, Any], datum)

    def decode_record(self, data: bytes) -> AvroRecord:
        """:meth:`decode` into the topic's record dataclass."""
        return self.record_cls.from_avro(self.decode(data))

    def _schemas_for(self, schema_id: int) -> tuple[ParsedSchema, ParsedSchema | None]:
        """(writer, reader) schemas for data written with ``schema_id``.

        The reader is None when the writer schema is the current one: fastavro then skips
        schema resolution, which roughly halves decode time of array-heavy records.
        """
        found = self._writers.get(schema_id)
        if found is not None:
            return found
        try:
            loaded = parse_schema_text(self.registry.schema_by_id(schema_id))
        except ContractsError as exc:
            raise self._error(str(exc), "", "consume", schema_id) from exc
        if loaded.name != self.current.schema.name:
            expected = self.current.schema.name
            reason = f"written with schema of {loaded.name}, this topic carries {expected}"
            raise self._error(reason, "", "consume", schema_id)
        same = loaded.canonical_fingerprint == self.current.schema.canonical_fingerprint
        found = (loaded.parsed, None if same else self.reader_schema)
        self._writers[schema_id] = found
        return found

    def _error(
        self, reason: str, path: str, direction: str, schema_id: int | None = None
    ) -> ContractError:
        if schema_id is None and direction == "produce":
            schema_id = self._schema_id
        return ContractError(
            topic=self.topic.value,
            subject=self.subject,
            reason=reason,
            field_path=path,
            direction=direction,
            schema_id=schema_id,
        )


# ---------------------------------------------------------------------------- entry points


@lru_cache(maxsize=1)
def default_registry() -> SchemaRegistry:
    """The registry from the process settings (``QT_SCHEMA_REGISTRY_URL`` or the file one)."""
    from streams.config import get_settings

    return registry_from_settings(get_settings())


# Keyed by the registry object itself (identity hash): holding it keeps its id from being reused.
_CODECS: dict[tuple[Topic, SchemaRegistry], TopicCodec] = {}
_CODECS_LOCK = threading.Lock()


def topic_codec(topic: Topic | str, registry: SchemaRegistry | None = None) -> TopicCodec:
    """The cached :class:`TopicCodec` of ``topic`` for ``registry`` (default: from settings)."""
    reg = registry if registry is not None else default_registry()
    key = (Topic(topic), reg)
    codec = _CODECS.get(key)
    if codec is None:
        with _CODECS_LOCK:
            codec = _CODECS.get(key)
            if codec is None:
                codec = TopicCodec(topic, reg, auto_register=_is_http(reg))
                _CODECS[key] = codec
    return codec


def _is_http(registry: SchemaRegistry) -> bool:
    # HTTP registries check compatibility server-side on registration; the file registry only
    # changes through `schemas release` in a reviewed pull request.
    from streams.contracts.registry import ConfluentSchemaRegistry

    return isinstance(registry, ConfluentSchemaRegistry)


def serializer_for(topic: Topic | str, registry: SchemaRegistry | None = None) -> Serializer:
    """``value -> bytes`` for ``topic`` (e.g. for a confluent-kafka producer)."""
    return topic_codec(topic, registry).encode


def deserializer_for(
    topic: Topic | str, registry: SchemaRegistry | None = None, *, as_record: bool = False
) -> Deserializer:
    """``bytes -> dict`` (or the record dataclass with ``as_record``) for ``topic``."""
    codec = topic_codec(topic, registry)
    return codec.decode_record if as_record else codec.decode


class AvroCodec(Codec):
    """Faust codec of one topic's values: ``value_serializer=AvroCodec(topic=Topic.X)``.

    ``as_record=True`` makes agents receive the record dataclass instead of a dict.
    """

    def __init__(
        self,
        children: tuple[Any, ...] | None = None,
        *,
        topic: Topic | str,
        registry: SchemaRegistry | None = None,
        as_record: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            children, topic=Topic(topic), registry=registry, as_record=as_record, **kwargs
        )
        self._codec = topic_codec(topic, registry)
        self._as_record = as_record

    def _dumps(self, obj: Any) -> bytes:
        return self._codec.encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self._codec.decode_record(s) if self._as_record else self._codec.decode(s)


def codec_for(
    topic: Topic | str, registry: SchemaRegistry | None = None, *, as_record: bool = False
) -> AvroCodec:
    """The Faust codec of ``topic``'s values."""
    return AvroCodec(topic=topic, registry=registry, as_record=as_record)


def register_faust_codecs(registry: SchemaRegistry | None = None) -> list[str]:
    """Register ``avro:<topic>`` codec names with Faust (``value_serializer='avro:...'``)."""
    from faust.serializers import codecs

    names = []
    for topic in Topic:
        name = f"avro:{topic.value}"
        codecs.register(name, codec_for(topic, registry))
        names.append(name)
    return names
