"""docker-compose.yml is valid Compose and agrees with the agent registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from workers.registry import AGENTS

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose())


def test_every_agent_queue_has_its_own_worker_service() -> None:
    services = compose()["services"]
    for name in AGENTS:
        assert name in services, f"agent {name!r} has no service in docker-compose.yml"
        assert services[name]["command"] == ["chorus", "worker", name]


def test_every_worker_service_names_a_registered_agent() -> None:
    for name, service in compose()["services"].items():
        command = service.get("command", [])
        if command[:2] == ["chorus", "worker"]:
            assert set(command[2:]) <= set(AGENTS), f"service {name} runs an unknown agent"


def test_flower_requires_auth_and_redis_keeps_every_message() -> None:
    services = compose()["services"]
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    redis_command = services["redis"]["command"]
    for flag, value in [("--appendonly", "yes"), ("--maxmemory-policy", "noeviction")]:
        assert redis_command[redis_command.index(flag) + 1] == value
    assert "--requirepass" in redis_command
