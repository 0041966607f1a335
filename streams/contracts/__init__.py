"""Avro contracts of the topology: schemas, typed records, registries and the Faust codec.

Public API (import from the submodules; this package imports nothing, so it stays light):

* ``streams.contracts.records`` — one frozen dataclass per Avro record (``TickReceived``,
  ``FeaturesComputed``, ... ``DeadLettered``, ``ControlCommand``), enums, ``record_type(topic)``.
* ``streams.contracts.codec`` — ``serializer_for(topic, registry=None)``,
  ``deserializer_for(topic, registry=None, *, as_record=False)``, ``codec_for(topic)`` (Faust
  codec), ``register_faust_codecs()``, ``TopicCodec``, ``wire_header``/``split_wire``.
* ``streams.contracts.registry`` — ``SchemaRegistry`` protocol, ``FileSchemaRegistry``,
  ``ConfluentSchemaRegistry``, ``MemorySchemaRegistry``, ``registry_from_settings(settings)``.
* ``streams.contracts.compat`` — ``check_backward(new_text, old_text)``.
* ``streams.contracts.http_registry`` — ``serve_registry(registry, host, port)``: a
  Confluent-compatible HTTP registry for confluent-kafka clients (``schemas serve``).
* ``streams.contracts.errors`` — ``ContractError`` (topic, subject, field path, direction),
  ``RegistryError``, ``IncompatibleSchemaError``, ``UnreleasedSchemaError``, ``SchemaLoadError``.
"""
