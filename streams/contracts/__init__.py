"""Avro contracts of the topology: schemas, typed records, registries and the Faust codec."""
