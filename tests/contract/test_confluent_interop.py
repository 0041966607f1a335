"""Interop with confluent-kafka's own registry client and Avro serde, over real HTTP.

Our file registry is served by `quantum-trader schemas serve` (``serve_registry``); a plain
``SchemaRegistryClient`` + ``AvroDeserializer`` must decode what our codec wrote, and our codec
must decode what confluent-kafka's ``AvroSerializer`` wrote. When ``CONTRACTS_TEST_REGISTRY_URL``
points at another Confluent-compatible registry (Apicurio's ``/apis/ccompat/v7``), the same
tests run against it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.contracts.codec import TopicCodec
from streams.contracts.errors import IncompatibleSchemaError, RegistryError
from streams.contracts.examples import load_example
from streams.contracts.http_registry import serve_registry
from streams.contracts.registry import ConfluentSchemaRegistry, FileSchemaRegistry
from streams.contracts.schema_loader import SCHEMAS_DIR, load_topic_schema
from streams.topics import Topic

EXTERNAL = os.environ.get("CONTRACTS_TEST_REGISTRY_URL")


@pytest.fixture(scope="module")
def served_url() -> Iterator[str]:
    with serve_registry(FileSchemaRegistry(SCHEMAS_DIR)) as url:
        yield url


@pytest.fixture(scope="module", params=["schemas-serve"] + (["external"] if EXTERNAL else []))
def registry_url(request: pytest.FixtureRequest, served_url: str) -> str:
    return served_url if request.param == "schemas-serve" else str(EXTERNAL)


def _ctx(topic: Topic) -> SerializationContext:
    return SerializationContext(topic.value, MessageField.VALUE)


@pytest.mark.parametrize("topic", list(Topic), ids=lambda t: t.value)
def test_plain_confluent_deserializer_reads_our_bytes(registry_url: str, topic: Topic) -> None:
    ours = TopicCodec(topic, ConfluentSchemaRegistry(registry_url), auto_register=True)
    example = load_example(topic)
    data = ours.encode(example)
    client = SchemaRegistryClient({"url": registry_url})
    assert AvroDeserializer(client)(data, _ctx(topic)) == example


@pytest.mark.parametrize("topic", list(Topic), ids=lambda t: t.value)
def test_our_codec_reads_confluent_serializer_bytes(registry_url: str, topic: Topic) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    serializer = AvroSerializer(
        client, load_topic_schema(topic).schema.text, conf={"auto.register.schemas": True}
    )
    example = load_example(topic)
    data = serializer(example, _ctx(topic))
    assert data is not None
    ours = TopicCodec(topic, ConfluentSchemaRegistry(registry_url), auto_register=True)
    assert ours.decode(data) == example


def test_served_ids_equal_the_file_registry_ids(served_url: str) -> None:
    doc = json.loads((SCHEMAS_DIR / "registry.json").read_text())
    http = ConfluentSchemaRegistry(served_url)
    for subject, entries in doc["subjects"].items():
        assert [v.schema_id for v in http.versions(subject)] == [e["id"] for e in entries]
    file_codec = TopicCodec(Topic.TRADES_CLOSED, FileSchemaRegistry(SCHEMAS_DIR))
    http_codec = TopicCodec(Topic.TRADES_CLOSED, http)
    example = load_example(Topic.TRADES_CLOSED)
    assert http_codec.encode(example) == file_codec.encode(example)


def _with_breaking_change(schemas: Path) -> str:
    schema = json.loads((schemas / "market.ticks.avsc").read_text())
    schema["fields"].append({"name": "exchange", "type": "string", "doc": "Exchange."})
    return json.dumps(schema)


def test_served_registry_refuses_registration_unless_allowed(tmp_schemas: Path) -> None:
    new = _with_breaking_change(tmp_schemas)
    with (
        serve_registry(FileSchemaRegistry(tmp_schemas)) as url,
        pytest.raises(RegistryError, match="403"),
    ):
        ConfluentSchemaRegistry(url).register("market.ticks-value", new)


def test_served_registry_answers_409_for_incompatible_schema(tmp_schemas: Path) -> None:
    new = _with_breaking_change(tmp_schemas)
    with serve_registry(FileSchemaRegistry(tmp_schemas), allow_register=True) as url:
        http = ConfluentSchemaRegistry(url)
        with pytest.raises(IncompatibleSchemaError, match="exchange"):
            http.register("market.ticks-value", new)
        client = SchemaRegistryClient({"url": url})
        from confluent_kafka.schema_registry import Schema

        assert client.test_compatibility("market.ticks-value", Schema(new, "AVRO")) is False


def test_unreachable_registry_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match=r"127\.0\.0\.1:9"):
        ConfluentSchemaRegistry("http://127.0.0.1:9").subjects()
