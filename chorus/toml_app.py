"""An app from a `team.toml`: `chorus -A team.toml ...` (or CHORUS_APP=/path/team.toml).

    [app]
    name = "launch"

    [agents.scout]
    purpose = "Gathers facts for a product launch."
    instructions = "You gather verifiable facts."
    tier = "strong"                 # or model = "claude-..."
    max_tokens = 2048
    output = "launch_models:Brief"  # a pydantic model, or an inline JSON Schema table

    [workflows.launch]
    pipeline = ["scout", { fanout = { branches = { email = "Write the email." },
                                      agent = "writer", merge = "editor" } }]

A block is an agent's name, or a table with one key: pipeline, fanout, route, consensus,
evaluate, orchestrate or step, holding the same arguments as the Python API.
"""

from __future__ import annotations

import importlib
import inspect
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from chorus import blocks
from chorus.app import App
from chorus.errors import AppDefinitionError
from chorus.json_models import model_from_schema
from workers.blocks import Block

AGENT_KEYS = {"purpose", "instructions", "tier", "model", "max_tokens", "output", "max_turns"}


def load(path: Path) -> App:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AppDefinitionError(f"cannot read team file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AppDefinitionError(f"{path} is not valid TOML: {exc}") from None
    name = str(data.get("app", {}).get("name") or path.stem.replace("-", "_"))
    app = App(name)
    agents = data.get("agents")
    if not isinstance(agents, dict) or not agents:
        raise AppDefinitionError(f"{path}: declare at least one [agents.NAME] table")
    for agent, table in agents.items():
        _agent(app, path, agent, table)
    for flow, table in (data.get("workflows") or {}).items():
        app.workflow(flow, _block(table, f"{path}: [workflows.{flow}]"))
    return app


def _agent(app: App, path: Path, name: str, table: Any) -> None:
    where = f"{path}: [agents.{name}]"
    if not isinstance(table, dict):
        raise AppDefinitionError(f"{where} must be a table")
    unknown = sorted(set(table) - AGENT_KEYS)
    if unknown:
        raise AppDefinitionError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(AGENT_KEYS))}"
        )
    missing = [key for key in ("purpose", "instructions", "output") if key not in table]
    if missing:
        raise AppDefinitionError(f"{where} needs {', '.join(missing)}")
    app.agent(
        name,
        purpose=str(table["purpose"]),
        instructions=str(table["instructions"]),
        output=_output(table["output"], where, name),
        tier=str(table.get("tier", "strong")),
        model=table.get("model"),
        max_tokens=int(table.get("max_tokens", 1024)),
        max_turns=int(table.get("max_turns", 8)),
    )


def _output(value: Any, where: str, agent: str) -> type[BaseModel]:
    if isinstance(value, dict):
        return model_from_schema(value, name=_class_name(agent))
    if not isinstance(value, str) or ":" not in value:
        raise AppDefinitionError(
            f"{where}: output is 'module:Class' (a pydantic model) or a JSON Schema table"
        )
    module_name, _, attr = value.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AppDefinitionError(f"{where}: cannot load output {value!r}: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise AppDefinitionError(f"{where}: {value} is not a pydantic model class")
    return found


def _class_name(agent: str) -> str:
    return "".join(part.capitalize() for part in agent.split("_")) + "Output"


BLOCKS = ("pipeline", "fanout", "route", "consensus", "evaluate", "orchestrate", "step")


def _block(value: Any, where: str) -> Block:
    if isinstance(value, str):
        return blocks.step(value)
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in BLOCKS:
        raise AppDefinitionError(
            f"{where}: a block is an agent name or a table with one of {', '.join(BLOCKS)}"
        )
    kind, args = next(iter(value.items()))
    try:
        if kind == "pipeline":
            return blocks.pipeline(*[_block(item, where) for item in _list(args, where)])
        if kind == "route":
            if isinstance(args, list):
                return blocks.route(args)
            return blocks.route(args["targets"], router=args.get("router", "router"))
        table = dict(args) if isinstance(args, dict) else {}
        if kind == "fanout":
            branches = table.pop("branches", None)
            if not isinstance(branches, dict):
                raise AppDefinitionError(f"{where}: fanout needs a branches table")
            built = {k: v if isinstance(v, str) else _block(v, where) for k, v in branches.items()}
            try:
                inspect.signature(blocks.fanout).bind(built, **table)
            except TypeError as exc:
                raise AppDefinitionError(f"{where}: fanout: {exc}") from None
            return blocks.fanout(built, **table)
        builder = getattr(blocks, kind)
        try:
            inspect.signature(builder).bind(**table)
        except TypeError as exc:
            raise AppDefinitionError(f"{where}: {kind}: {exc}") from None
        built_block: Block = builder(**table)
        return built_block
    except KeyError as exc:
        raise AppDefinitionError(f"{where}: {kind} needs {exc}") from None


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise AppDefinitionError(f"{where}: pipeline is a list of blocks")
    return value
