"""A small Confluent-compatible HTTP API over any :class:`SchemaRegistry` (``schemas serve``).

Enough of the Confluent Schema Registry REST API for confluent-kafka's ``SchemaRegistryClient``,
``AvroSerializer`` and ``AvroDeserializer``: schema by id, subjects, versions, lookup,
registration (off unless ``allow_register``: the file registry changes in reviewed releases)
and compatibility tests. Standard library only; one thread per request; loopback by default.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from streams.contracts.compat import check_backward
from streams.contracts.errors import ContractsError, IncompatibleSchemaError, RegistryError
from streams.contracts.registry import RegisteredSchema, SchemaRegistry

JSON_TYPE = "application/vnd.schemaregistry.v1+json"


class HttpError(Exception):
    """An error answer in the registry's format (HTTP status + Confluent error code)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


Handler = Callable[["RegistryApi", dict[str, Any] | None, re.Match[str]], Any]


class RegistryApi:
    """The routes, as plain methods over a registry (no HTTP here: testable directly)."""

    def __init__(self, registry: SchemaRegistry, allow_register: bool) -> None:
        self.registry = registry
        self.allow_register = allow_register
        self.lock = threading.Lock()

    def schema_by_id(self, _: Any, m: re.Match[str]) -> Any:
        try:
            return {"schema": self.registry.schema_by_id(int(m["id"]))}
        except RegistryError as exc:
            raise HttpError(404, 40403, str(exc)) from None

    def subjects(self, _: Any, __: re.Match[str]) -> Any:
        return self.registry.subjects()

    def versions(self, _: Any, m: re.Match[str]) -> Any:
        return [v.version for v in self._versions(m["subject"])]

    def version(self, _: Any, m: re.Match[str]) -> Any:
        return _as_json(self._version(m["subject"], m["version"]))

    def lookup(self, body: dict[str, Any] | None, m: re.Match[str]) -> Any:
        found = self.registry.lookup(m["subject"], _schema_of(body))
        if found is None:
            raise HttpError(404, 40403, f"schema not found in {m['subject']}")
        return _as_json(found)

    def register(self, body: dict[str, Any] | None, m: re.Match[str]) -> Any:
        text = _schema_of(body)
        with self.lock:
            found = self.registry.lookup(m["subject"], text)
            if found is None and not self.allow_register:
                raise HttpError(403, 40301, "registration is disabled: use `schemas release`")
            if found is None:
                try:
                    found = self.registry.register(m["subject"], text)
                except IncompatibleSchemaError as exc:
                    raise HttpError(409, 409, str(exc)) from None
        return _as_json(found)

    def compatibility(self, body: dict[str, Any] | None, m: re.Match[str]) -> Any:
        target = self._version(m["subject"], m["version"])
        result = check_backward(_schema_of(body), target.schema_text)
        return {"is_compatible": result.compatible, "messages": [str(p) for p in result.problems]}

    def config(self, _: Any, __: re.Match[str]) -> Any:
        return {"compatibilityLevel": "BACKWARD"}

    def _versions(self, subject: str) -> list[RegisteredSchema]:
        found = self.registry.versions(subject)
        if not found:
            raise HttpError(404, 40401, f"subject {subject} not found")
        return found

    def _version(self, subject: str, version: str) -> RegisteredSchema:
        found = self._versions(subject)
        if version in ("latest", "-1"):
            return found[-1]
        for v in found:
            if str(v.version) == version:
                return v
        raise HttpError(404, 40402, f"version {version} of {subject} not found")


def _schema_of(body: dict[str, Any] | None) -> str:
    if not body or not isinstance(body.get("schema"), str):
        raise HttpError(422, 42201, "request body needs a 'schema' string")
    if body.get("schemaType", "AVRO") != "AVRO":
        raise HttpError(422, 42201, "only AVRO schemas are served here")
    return str(body["schema"])


def _as_json(found: RegisteredSchema) -> dict[str, Any]:
    return {
        "subject": found.subject,
        "version": found.version,
        "id": found.schema_id,
        "schema": found.schema_text,
    }


_SUBJECT = r"(?P<subject>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"/schemas/ids/(?P<id>\d+)"), RegistryApi.schema_by_id),
    ("GET", re.compile(r"/subjects"), RegistryApi.subjects),
    ("GET", re.compile(rf"/subjects/{_SUBJECT}/versions"), RegistryApi.versions),
    ("GET", re.compile(rf"/subjects/{_SUBJECT}/versions/(?P<version>[^/]+)"), RegistryApi.version),
    ("POST", re.compile(rf"/subjects/{_SUBJECT}"), RegistryApi.lookup),
    ("POST", re.compile(rf"/subjects/{_SUBJECT}/versions"), RegistryApi.register),
    (
        "POST",
        re.compile(rf"/compatibility/subjects/{_SUBJECT}/versions/(?P<version>[^/]+)"),
        RegistryApi.compatibility,
    ),
    ("GET", re.compile(r"/config(/[^/]+)?"), RegistryApi.config),
]


def dispatch(api: RegistryApi, method: str, raw_path: str, body: bytes) -> tuple[int, Any]:
    """(status, JSON payload) for one request."""
    path = unquote(urlsplit(raw_path).path).rstrip("/")
    try:
        payload = json.loads(body) if body else None
        for route_method, pattern, handler in ROUTES:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return 200, handler(api, payload, match)
        raise HttpError(404, 404, f"no route for {method} {path}")
    except HttpError as exc:
        return exc.status, {"error_code": exc.code, "message": exc.message}
    except (json.JSONDecodeError, ContractsError) as exc:
        return 422, {"error_code": 42201, "message": str(exc)}


def _handler_class(api: RegistryApi) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = dispatch(api, method, self.path, self.rfile.read(length))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", JSON_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: tests and the CLI report what matters themselves

    return _Handler


@contextmanager
def serve_registry(
    registry: SchemaRegistry, host: str = "127.0.0.1", port: int = 0, allow_register: bool = False
) -> Iterator[str]:
    """Serve ``registry`` in a background thread; yields the base URL; stops on exit."""
    server = ThreadingHTTPServer(
        (host, port), _handler_class(RegistryApi(registry, allow_register))
    )
    thread = threading.Thread(target=server.serve_forever, name="schema-registry", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
