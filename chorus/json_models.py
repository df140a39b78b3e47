"""A pydantic model from an inline JSON Schema (a team file's `output` table).

Covers what structured outputs take: objects with named properties, strings (with length
bounds and enums), numbers and integers (with bounds), booleans, arrays (with item bounds) and
nested objects. Anything else is refused with the path to the part that is not supported.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from chorus.errors import AppDefinitionError

SCALARS: dict[str, type[Any]] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
}
BOUNDS = {
    "minLength": "min_length",
    "maxLength": "max_length",
    "minimum": "ge",
    "maximum": "le",
    "minItems": "min_length",
    "maxItems": "max_length",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def model_from_schema(schema: dict[str, Any], *, name: str) -> type[BaseModel]:
    if schema.get("type", "object") != "object":
        raise AppDefinitionError(f"output {name}: the schema's top level must be an object")
    return _object(schema, name, name)


def _object(schema: dict[str, Any], name: str, path: str) -> type[BaseModel]:
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise AppDefinitionError(f"output {path}: an object needs properties")
    required = set(schema.get("required", properties))
    fields: dict[str, Any] = {}
    for key, sub in properties.items():
        if not isinstance(sub, dict):
            raise AppDefinitionError(f"output {path}.{key}: each property is a schema table")
        annotation = _type(sub, f"{name}_{key}", f"{path}.{key}")
        constraints = {BOUNDS[k]: v for k, v in sub.items() if k in BOUNDS}
        if "description" in sub:
            constraints["description"] = str(sub["description"])
        if key in required:
            fields[key] = (annotation, Field(..., **constraints))
        else:
            fields[key] = (annotation | None, Field(default=None, **constraints))
    model: type[BaseModel] = create_model(name, __base__=_Strict, **fields)
    return model


def _type(schema: dict[str, Any], name: str, path: str) -> Any:
    if "enum" in schema:
        values = tuple(schema["enum"])
        if not values:
            raise AppDefinitionError(f"output {path}: enum is empty")
        return Literal[values]
    kind = schema.get("type")
    if kind in SCALARS:
        return SCALARS[kind]
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, dict):
            raise AppDefinitionError(f"output {path}: an array needs an items schema")
        return list[_type(items, f"{name}_item", f"{path}[]")]  # type: ignore[misc]
    if kind == "object":
        return _object(schema, name.title().replace("_", ""), path)
    raise AppDefinitionError(
        f"output {path}: type {kind!r} is not supported (string, integer, number, boolean, "
        "array, object, or an enum)"
    )
