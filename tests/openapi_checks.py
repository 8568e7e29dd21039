"""Checks every service's OpenAPI document must pass (tests/cloud/test_openapi.py, tests/edge/test_openapi.py).

Examples are JSON, so they are validated the way a request body is (`model_validate_json`: bytes are base64
there, as on the wire), each against the model its schema names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

METHODS = frozenset({"get", "put", "post", "delete", "patch"})


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


@dataclass(frozen=True)
class Example:
    where: str
    schema: str  # the component schema's name
    value: Any


def operations(document: Mapping[str, Any]) -> list[Operation]:
    return [
        Operation(method, path, spec)
        for path, item in document["paths"].items()
        for method, spec in item.items()
        if method in METHODS
    ]


def _schema_name(schema: Mapping[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _media_examples(content: Mapping[str, Any]) -> Iterator[tuple[str | None, Any]]:
    for media in content.values():
        name = _schema_name(media.get("schema", {}))
        if "example" in media:
            yield name, media["example"]
        for named in media.get("examples", {}).values():
            yield name, named["value"]


def request_body_has_example(document: Mapping[str, Any], operation: Operation) -> bool:
    """An example on the request body itself, or on the component schema the body refers to."""
    content = operation.spec["requestBody"]["content"]
    if any(True for _ in _media_examples(content)):
        return True
    schemas = document["components"]["schemas"]
    names = [_schema_name(media.get("schema", {})) for media in content.values()]
    return any(name is not None and schemas[name].get("examples") for name in names)


def examples(document: Mapping[str, Any]) -> list[Example]:
    """Every example in the document: on component schemas, request bodies and responses."""
    found = [
        Example(f"components/schemas/{name}", name, value)
        for name, schema in document["components"]["schemas"].items()
        for value in schema.get("examples", [])
    ]
    for operation in operations(document):
        parts = [("requestBody", operation.spec.get("requestBody", {}).get("content", {}))]
        parts += [(f"responses/{s}", r.get("content", {})) for s, r in operation.spec["responses"].items()]
        for part, content in parts:
            for name, value in _media_examples(content):
                assert name is not None, (
                    f"{operation} {part}: an example without a schema to check it against"
                )
                found.append(Example(f"{operation} {part}", name, value))
    return found


def validate(example: Example, models: Mapping[str, type[BaseModel]]) -> None:
    """Raises pydantic's ValidationError (naming the field) when the example is not a valid instance."""
    name = example.schema.removesuffix("-Input").removesuffix("-Output")
    assert name in models, f"{example.where}: no model named {name!r} to validate the example with"
    models[name].model_validate_json(json.dumps(example.value))
