"""Tools the model can call: a typed Python function becomes a `Tool` with a JSON input schema.

pydantic builds the schema from the type hints, `docstring_parser` supplies the descriptions
(Google, NumPy or reST style), and the same pydantic model validates the model's arguments
before the function runs, so a function only ever sees arguments that match its signature.
A parameter annotated `ToolContext` is left out of the schema and filled in at call time.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Any

import docstring_parser
from pydantic import ConfigDict, Field, PydanticUserError, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticSerializationError

from messages.errors import ChorusError

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""The Messages API's rule for tool names."""

Invoke = Callable[[Mapping[str, Any], "ToolContext"], object]


class ToolDefinitionError(ChorusError, TypeError):
    """A function (or server tool) cannot be a tool; the message says what to change."""


class ToolInputError(ChorusError, ValueError):
    """The model's arguments do not match the tool's signature; the tool was not called."""

    def __init__(self, tool: str, details: str) -> None:
        self.tool = tool
        self.details = details
        super().__init__(f"Invalid arguments for tool {tool!r}: {details}")


class ToolError(ChorusError):
    """Raise from a tool to send exactly this message to the model as the tool's error.

    Any other exception reaches the model as `<ExcType>: <message>`; this one is for failures
    the tool expects (a note that does not exist), so no type name or traceback is added.
    """


def idempotency_key(task_id: str, message_id: str, tool_use_id: str) -> str:
    """The same for every delivery of the same step's same tool call, so side effects can dedupe."""
    material = json.dumps([task_id, message_id, tool_use_id]).encode()
    return hashlib.sha256(material).hexdigest()[:32]


@dataclass(frozen=True, kw_only=True)
class ToolContext:
    """Where a tool call comes from; declare a parameter of this type to receive it."""

    task_id: str
    message_id: str
    """The step's input message id (a redelivery carries the same one)."""
    tool_use_id: str
    """The model's id for this call (`tool_use.id`), journaled with the turn."""
    agent: str
    idempotency_key: str = field(init=False)
    """Derived from task_id, message_id and tool_use_id: stable across redeliveries."""

    def __post_init__(self) -> None:
        key = idempotency_key(self.task_id, self.message_id, self.tool_use_id)
        object.__setattr__(self, "idempotency_key", key)


@dataclass(frozen=True)
class Tool:
    """One tool: what the model is told about it, and how to run it."""

    name: str
    description: str
    input_schema: dict[str, Any]
    """JSON Schema of the arguments, as the Messages API's `tools[].input_schema` takes it."""
    invoke: Invoke = field(repr=False, compare=False)
    """Runs the tool with the model's arguments; raises `ToolInputError` before running it
    when they do not validate, `ToolError` (or anything else) when it fails."""
    requires_approval: bool = False
    """A human approves each call before it runs (the runner enforces this, not `invoke`)."""
    timeout: float | None = None
    """Seconds a call may take; None takes the executor's default."""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ToolDefinitionError(
                f"tool name {self.name!r} must match {NAME_PATTERN.pattern} "
                "(the Messages API's rule): pass name= with letters, digits, _ or -"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise ToolDefinitionError(f"tool {self.name!r}: timeout must be > 0 s or None")

    def to_api(self) -> dict[str, Any]:
        """The Messages API's `tools[]` entry (a copy: callers may add `cache_control`)."""
        entry: dict[str, Any] = {"name": self.name}
        if self.description:
            entry["description"] = self.description
        entry["input_schema"] = copy.deepcopy(self.input_schema)
        return entry


class _NoFieldTitles(GenerateJsonSchema):
    """pydantic titles every field after its name: tokens that tell the model nothing."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


@dataclass(frozen=True)
class _Param:
    name: str
    kind: inspect._ParameterKind
    field: str | None
    """The model field holding its value; None for the ToolContext parameter."""


def tool_from_function(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
) -> Tool:
    """A `Tool` from a plain, fully annotated function; refuses what the model could not call."""
    label = f"function {getattr(fn, '__qualname__', fn)!r}"
    tool_name = name if name is not None else getattr(fn, "__name__", "")
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise ToolDefinitionError(
            f"{label} is async: async tools are not supported yet (tools run in worker "
            "threads); give a plain def, e.g. one that calls asyncio.run(...)"
        )
    if not NAME_PATTERN.match(tool_name):
        raise ToolDefinitionError(
            f"{label}: tool name {tool_name!r} must match {NAME_PATTERN.pattern} "
            "(the Messages API's rule): pass name='...'"
        )
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError for an unresolvable forward reference, mostly
        raise ToolDefinitionError(
            f"cannot resolve the type hints of {label}: {exc}; "
            "make every type it names importable from its module"
        ) from exc
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    documented = {p.arg_name: p.description for p in doc.params if p.description}

    fields: dict[str, Any] = {}
    params: list[_Param] = []
    for index, param in enumerate(inspect.signature(fn).parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise ToolDefinitionError(
                f"{label} takes {star}{param.name}: the model can only fill named, typed "
                f"parameters; replace it with explicit ones (e.g. items: list[str])"
            )
        if param.name not in hints:
            raise ToolDefinitionError(
                f"parameter {param.name!r} of {label} has no type annotation; annotate it "
                f"(e.g. {param.name}: str) so its input schema can be built"
            )
        annotation = hints[param.name]
        if _is_context(annotation):
            if any(p.field is None for p in params):
                raise ToolDefinitionError(f"{label} declares more than one ToolContext parameter")
            params.append(_Param(param.name, param.kind, None))
            continue
        default = ... if param.default is param.empty else param.default
        internal = f"p{index}"  # the alias carries the real name: no clash with BaseModel's own
        info = Field(default, alias=param.name)
        if param.name in documented and not _has_description(annotation):
            info = Field(default, alias=param.name, description=documented[param.name])
        fields[internal] = (annotation, info)
        params.append(_Param(param.name, param.kind, internal))

    config = ConfigDict(extra="forbid", protected_namespaces=(), validate_by_alias=True)
    try:
        model = create_model(f"{tool_name}_arguments", __config__=config, **fields)
        schema = model.model_json_schema(schema_generator=_NoFieldTitles)
    except (PydanticUserError, PydanticSerializationError, TypeError, ValueError) as exc:
        raise ToolDefinitionError(
            f"cannot build the input schema of {label}: {str(exc).splitlines()[0]}; use "
            "JSON-able types (str, int, float, bool, lists, dicts, Literal, enums, pydantic models)"
        ) from exc
    schema.pop("title", None)
    schema.setdefault("properties", {})

    def invoke(arguments: Mapping[str, Any], context: ToolContext) -> object:
        try:
            validated = model.model_validate(dict(arguments))
        except ValidationError as exc:
            raise ToolInputError(tool_name, describe_validation_error(exc)) from None
        args: list[object] = []
        kwargs: dict[str, object] = {}
        for p in params:
            value = context if p.field is None else getattr(validated, p.field)
            if p.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[p.name] = value
        return fn(*args, **kwargs)

    if description is None:
        parts = (doc.short_description, doc.long_description)
        description = "\n\n".join(part.strip() for part in parts if part)
    return Tool(
        name=tool_name,
        description=description,
        input_schema=schema,
        invoke=invoke,
        requires_approval=requires_approval,
        timeout=timeout,
    )


def _is_context(annotation: Any) -> bool:
    """`ToolContext`, also when `Annotated` or optional (it is always given)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation is ToolContext:
        return True
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        return set(typing.get_args(annotation)) == {ToolContext, type(None)}
    return False


def _has_description(annotation: Any) -> bool:
    """An `Annotated[..., Field(description=...)]` is more specific than the docstring."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in annotation.__metadata__)


def describe_validation_error(exc: ValidationError) -> str:
    """pydantic's errors in one line the model can act on (no documentation URLs)."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        text = f"{where}: {error['msg']}"
        if error["type"] not in ("missing", "extra_forbidden"):
            given = repr(error.get("input"))
            text += f" (got {given if len(given) <= 80 else given[:77] + '...'})"
        parts.append(text)
    return "; ".join(parts)
