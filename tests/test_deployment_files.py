"""docker-compose.yml is valid Compose and agrees with the agent registry and the CLI.

The agreement checks are plain functions (`missing_services`, `command_problems`, ...) so that
tests/test_kubernetes_manifests.py reuses them and so that a test can show they report an agent
added to the registry without a service.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from workers.registry import AGENTS

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@cache
def chorus_subcommands() -> frozenset[str]:
    """The `chorus` subcommands, read from the CLI's own parser."""
    from dispatcher.cli import _parser

    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return frozenset(action.choices)
    raise AssertionError("the chorus parser has no subcommands")


@cache
def celery_subcommands() -> frozenset[str]:
    """Celery's commands, plugins included (Flower registers `flower`)."""
    from celery.bin.celery import celery

    return frozenset(celery.commands)


def command_problems(command: list[str]) -> list[str]:
    """Why `command` would not start a Chorus process (empty if it would)."""
    if not command:
        return ["empty command"]
    program, args = command[0], command[1:]
    if program == "chorus":
        from dispatcher.cli import _parser

        if not args or args[0] not in chorus_subcommands():
            return [f"`chorus {' '.join(args[:1])}` is not one of {sorted(chorus_subcommands())}"]
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parsed = _parser().parse_args(args)
        except SystemExit:
            return [f"`{' '.join(command)}` does not parse: {errors.getvalue().strip()}"]
        if parsed.command == "worker":
            unknown = [name for name in parsed.agents if name not in AGENTS]
            if unknown or not (parsed.agents or parsed.all):
                return [f"`{' '.join(command)}` names no agent or unknown agents {unknown}"]
        return []
    if program == "celery":
        if args[:2] != ["-A", "workers.app"]:
            return [f"`{' '.join(command)}` does not load the app with -A workers.app"]
        if len(args) < 3 or args[2] not in celery_subcommands():
            return [f"`{' '.join(command)}`: no such celery command"]
        return []
    if program == "python":
        if args[:1] != ["-m"] or len(args) < 2 or importlib.util.find_spec(args[1]) is None:
            return [f"`{' '.join(command)}` does not run an importable module"]
        return []
    return [f"`{' '.join(command)}`: unknown program {program!r}"]


def worker_agents(command: list[str]) -> list[str]:
    """The agents a `chorus worker ...` command consumes for ([] for other commands)."""
    if command[:2] != ["chorus", "worker"]:
        return []
    return [arg for arg in command[2:] if not arg.startswith("-")]


def consumed_agents(commands: Iterable[list[str]]) -> set[str]:
    return {agent for command in commands for agent in worker_agents(command)}


def service_commands(compose_file: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        name: list(service.get("command", [])) for name, service in compose_file["services"].items()
    }


def missing_services(registry_names: Iterable[str], compose_file: Mapping[str, Any]) -> list[str]:
    """Registered agents that no compose service consumes, in registry order."""
    consumed = consumed_agents(service_commands(compose_file).values())
    return [name for name in registry_names if name not in consumed]


def unknown_services(registry_names: Iterable[str], compose_file: Mapping[str, Any]) -> list[str]:
    """Compose services that run `chorus worker` for an agent not in the registry."""
    known = set(registry_names)
    return [
        name
        for name, command in service_commands(compose_file).items()
        if not set(worker_agents(command)) <= known
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose())


def test_every_agent_queue_has_its_own_worker_service() -> None:
    services = compose()["services"]
    assert missing_services(AGENTS, compose()) == []
    for name in AGENTS:  # one service per agent, so `--scale NAME=4` scales that agent alone
        assert name in services, f"agent {name!r} has no service in docker-compose.yml"
        assert services[name]["command"] == ["chorus", "worker", name]


def test_every_worker_service_names_a_registered_agent() -> None:
    assert unknown_services(AGENTS, compose()) == []


def test_an_agent_added_to_the_registry_without_a_service_is_reported() -> None:
    registry = [*AGENTS, "translator"]
    assert missing_services(registry, compose()) == ["translator"]

    with_service = compose()
    with_service["services"]["translator"] = {"command": ["chorus", "worker", "translator"]}
    assert missing_services(registry, with_service) == []
    assert unknown_services(AGENTS, with_service) == ["translator"]


def test_every_chorus_service_command_exists() -> None:
    services = compose()["services"]
    ours = [name for name, service in services.items() if "build" in service]
    assert {"auditor", "flower", "simulator", *AGENTS} <= set(ours)
    problems = {name: command_problems(services[name].get("command", [])) for name in ours}
    assert {name: found for name, found in problems.items() if found} == {}


def test_a_command_that_does_not_exist_is_reported() -> None:
    assert command_problems(["chorus", "frobnicate"])
    assert command_problems(["chorus", "worker", "translator"])
    assert command_problems(["chorus", "worker"])
    assert command_problems(["chorus", "auditor", "--no-such-option"])
    assert command_problems(["celery", "-A", "workers.app", "frobnicate"])
    assert command_problems(["python", "-m", "no_such_module_here"])
    assert command_problems(["chorus", "worker", "research", "critic"]) == []


def test_flower_requires_auth_and_redis_keeps_every_message() -> None:
    services = compose()["services"]
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert services["flower"]["command"][:2] == ["chorus", "flower"]  # refuses to run without auth
    redis_command = services["redis"]["command"]
    for flag, value in [("--appendonly", "yes"), ("--maxmemory-policy", "noeviction")]:
        assert redis_command[redis_command.index(flag) + 1] == value
    assert "--requirepass" in redis_command


def test_postgres_keeps_the_audit_trail_and_the_auditor_writes_it() -> None:
    services = compose()["services"]
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])

    auditor = services["auditor"]
    assert auditor["command"] == ["chorus", "auditor"]
    assert auditor["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert auditor["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ["auditor", *AGENTS]:
        url = services[name]["environment"]["CHORUS_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://chorus:${POSTGRES_PASSWORD:?"), name
        assert url.endswith("@postgres:5432/chorus"), name
    assert "ANTHROPIC_API_KEY" not in auditor["environment"]
