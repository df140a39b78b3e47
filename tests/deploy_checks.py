"""Checks on deployment files that work for any app, not only the seed team.

Adapted from tests/test_deployment_files.py and tests/test_kubernetes_manifests.py, whose
functions check against the seed registry: here every function takes the app's agents (name ->
queue), so the generator's output for a user's app is held to the same rules.

`python -m tests.deploy_checks` regenerates the repository's docker-compose.yml and deploy/k8s/
for the seed team (what `chorus deploy compose` / `chorus deploy k8s deploy/k8s` will do).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from functools import cache, partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import yaml
from kombu.transport.redis import PRIORITY_STEPS, Channel

from dispatcher.deploy import DeployAgent, DeploySpec, compose_file, write_k8s

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
COMPOSE_SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
KEDA_API = "keda.sh/v1alpha1"
SECRET_NAME = "chorus-secrets"
REGENERATE = "python -m tests.deploy_checks"
READ_ONLY_WEB = frozenset({"metrics"})
"""Web surfaces without auth on purpose: the Prometheus exporter serves read-only counters."""
_CREDENTIAL = re.compile(r"[A-Z0-9_]*(_AUTH|_PASSWORD|_TOKEN)")
_CLIENT_CREDENTIALS = frozenset({"REDIS_PASSWORD", "REDISCLI_AUTH", "POSTGRES_PASSWORD"})
"""Passwords a process uses to reach Redis or PostgreSQL: they protect nothing it serves."""

Doc = dict[str, Any]


def seed_spec() -> DeploySpec:
    """The built-in seed team, in registry order: what the repository's files are made from."""
    from workers.registry import AGENTS

    agents = tuple(DeployAgent(name, spec.queue) for name, spec in AGENTS.items())
    return DeploySpec(app_name="chorus", app_ref=None, agents=agents)


def queues_of(spec: DeploySpec) -> dict[str, str]:
    return {agent.name: agent.queue for agent in spec.agents}


# -- staleness ------------------------------------------------------------------------------------


def stale_paths(expected: Mapping[str, str], directory: Path) -> list[str]:
    """Files under `directory` that differ from `expected`, are missing, or are not expected."""
    on_disk = {
        path.relative_to(directory).as_posix(): path
        for path in directory.rglob("*")
        if path.is_file()
    }
    return sorted(
        name
        for name in set(expected) | set(on_disk)
        if name not in on_disk
        or name not in expected
        or on_disk[name].read_bytes() != expected[name].encode()
    )


def regenerate() -> None:
    spec = seed_spec()
    COMPOSE.write_text(compose_file(spec), newline="")
    for path in write_k8s(spec, K8S):
        print(path.relative_to(ROOT))
    print(COMPOSE.relative_to(ROOT))


# -- commands -------------------------------------------------------------------------------------


@cache
def chorus_subcommands() -> frozenset[str]:
    from dispatcher.cli import _parser

    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return frozenset(action.choices)
    raise AssertionError("the chorus parser has no subcommands")


def command_problems(command: list[str], agents: Collection[str]) -> list[str]:
    """Why `command` would not start a process of the app whose agents are `agents`."""
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
            unknown = [name for name in parsed.agents if name not in agents]
            if unknown or not parsed.agents:
                return [f"`{' '.join(command)}` names no agent or unknown agents {unknown}"]
        return []
    if program == "python":
        if args[:1] != ["-m"] or len(args) < 2 or importlib.util.find_spec(args[1]) is None:
            return [f"`{' '.join(command)}` does not run an importable module"]
        return []
    return [f"`{' '.join(command)}`: unknown program {program!r}"]


def worker_agents(command: list[str]) -> list[str]:
    if command[:2] != ["chorus", "worker"]:
        return []
    return [arg for arg in command[2:] if not arg.startswith("-")]


# -- Compose --------------------------------------------------------------------------------------


def compose_problems(text: str) -> list[str]:
    """Where the text breaks the Compose Specification (empty if it does not)."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [error.message for error in validator.iter_errors(yaml.safe_load(text))]


def service_commands(compose: Mapping[str, Any]) -> dict[str, list[str]]:
    return {name: list(s.get("command", [])) for name, s in compose["services"].items()}


def missing_services(agents: Iterable[str], compose: Mapping[str, Any]) -> list[str]:
    consumed = {a for command in service_commands(compose).values() for a in worker_agents(command)}
    return [name for name in agents if name not in consumed]


def unknown_services(agents: Iterable[str], compose: Mapping[str, Any]) -> list[str]:
    known = set(agents)
    return [
        name
        for name, command in service_commands(compose).items()
        if not set(worker_agents(command)) <= known
    ]


def compose_web_problems(compose: Mapping[str, Any]) -> list[str]:
    """Published ports off loopback, and web services that take no credential."""
    problems = []
    for name, service in compose["services"].items():
        ports = service.get("ports", [])
        for port in ports:
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is not bound to 127.0.0.1")
        if not ports or name in READ_ONLY_WEB:
            continue
        env = service.get("environment", {})
        credentials = [
            key
            for key, value in env.items()
            if _CREDENTIAL.fullmatch(key) and key not in _CLIENT_CREDENTIALS and ":?" in str(value)
        ]
        if not credentials:
            problems.append(f"{name}: serves on {ports} without a required credential variable")
    return problems


# -- Kubernetes -----------------------------------------------------------------------------------


def load_docs(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def deployed(files: Mapping[str, str]) -> list[Doc]:
    """Every resource `kubectl apply -k` creates from these files."""
    [kustomization] = load_docs(files["kustomization.yaml"])
    return [doc for name in kustomization["resources"] for doc in load_docs(files[name])]


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def containers(doc: Doc) -> list[Doc]:
    pod = doc["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def pod_templates(docs: Iterable[Doc]) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet")]


def deployment_agents(deployment: Doc) -> list[str]:
    return [agent for c in containers(deployment) for agent in worker_agents(c["command"])]


def worker_deployments(docs: Iterable[Doc]) -> dict[str, Doc]:
    return {
        doc["metadata"]["name"]: doc
        for doc in of_kind(docs, "Deployment")
        if deployment_agents(doc)
    }


def missing_deployments(agents: Iterable[str], docs: Iterable[Doc]) -> list[str]:
    consumed = {a for d in worker_deployments(docs).values() for a in deployment_agents(d)}
    return [name for name in agents if name not in consumed]


def missing_scaled_objects(agents: Iterable[str], docs: Iterable[Doc]) -> list[str]:
    docs = list(docs)
    deployments = worker_deployments(docs)
    scaled = {
        agent
        for so in of_kind(docs, "ScaledObject")
        if so["spec"]["scaleTargetRef"]["name"] in deployments
        for agent in deployment_agents(deployments[so["spec"]["scaleTargetRef"]["name"]])
    }
    return [name for name in agents if name not in scaled]


def unknown_deployments(agents: Iterable[str], docs: Iterable[Doc]) -> list[str]:
    known = set(agents)
    return [
        name
        for name, doc in worker_deployments(docs).items()
        if not set(deployment_agents(doc)) <= known
    ]


def priority_lists(queue: str) -> list[str]:
    """The Redis lists kombu fills for `queue`, named by kombu's own `Channel._q_for_pri`."""
    channel = SimpleNamespace(sep=Channel.sep, priority_steps=PRIORITY_STEPS)
    channel.priority = partial(Channel.priority, channel)
    return [Channel._q_for_pri(channel, queue, step) for step in PRIORITY_STEPS]


def scaled_object_problems(so: Doc, docs: list[Doc], queues: Mapping[str, str]) -> list[str]:
    """What keeps `so` from scaling one agent's Deployment on that agent's whole backlog."""
    name = so.get("metadata", {}).get("name", "?")
    problems: list[str] = []
    if so.get("apiVersion") != KEDA_API:
        problems.append(f"{name}: apiVersion must be {KEDA_API}")
    spec = so.get("spec", {})
    target = spec.get("scaleTargetRef", {})
    deployments = worker_deployments(docs)
    if target.get("kind", "Deployment") != "Deployment" or target.get("name") not in deployments:
        return [*problems, f"{name}: scaleTargetRef {target} is no agent worker Deployment"]
    deployment = deployments[target["name"]]
    agents = deployment_agents(deployment)
    if len(agents) != 1 or agents[0] not in queues:
        return [*problems, f"{name}: {target['name']} runs {agents}, not one agent of the app"]
    if "replicas" in deployment["spec"]:
        problems.append(f"{name}: {target['name']} sets replicas, which the HPA owns")
    if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
        problems.append(f"{name}: need 1 <= minReplicaCount <= maxReplicaCount")
    wanted = priority_lists(queues[agents[0]])
    triggers = spec.get("triggers", [])
    auths = {doc["metadata"]["name"] for doc in of_kind(docs, "TriggerAuthentication")}
    for trigger in triggers:
        meta = trigger.get("metadata", {})
        label = trigger.get("name", "?")
        if trigger.get("type") != "redis":
            problems.append(f"{name}/{label}: trigger type {trigger.get('type')!r}, not redis")
        if not all(isinstance(value, str) for value in meta.values()):
            problems.append(f"{name}/{label}: KEDA metadata values must all be strings")
        if not str(meta.get("listLength", "")).isdigit():
            problems.append(f"{name}/{label}: listLength must be a whole number")
        if not re.fullmatch(r"[a-z0-9.-]+:\d+", str(meta.get("address", ""))):
            problems.append(f"{name}/{label}: address must be host:port")
        if trigger.get("authenticationRef", {}).get("name") not in auths:
            problems.append(f"{name}/{label}: authenticationRef names no TriggerAuthentication")
    listed = [trigger.get("metadata", {}).get("listName") for trigger in triggers]
    if sorted(listed, key=str) != sorted(wanted):
        problems.append(f"{name}: triggers read {listed}, want each of {wanted} once")
    modifiers = spec.get("advanced", {}).get("scalingModifiers", {})
    names = [trigger.get("name") for trigger in triggers]
    terms = [term.strip() for term in str(modifiers.get("formula", "")).split("+")]
    if sorted(terms, key=str) != sorted(names, key=str) or len(set(names)) != len(names):
        problems.append(f"{name}: scalingModifiers.formula must sum the triggers {names}")
    if not str(modifiers.get("target", "")).isdigit():
        problems.append(f"{name}: scalingModifiers.target must be a whole number")
    if modifiers.get("metricType") != "AverageValue":
        problems.append(f"{name}: scalingModifiers.metricType must be AverageValue")
    return problems


def secret_refs(doc: Doc) -> Iterator[tuple[str, str]]:
    """(secret, key) pairs a resource reads."""
    if doc["kind"] == "TriggerAuthentication":
        for ref in doc["spec"]["secretTargetRef"]:
            yield ref["name"], ref["key"]
    if "template" in doc.get("spec", {}):
        for container in containers(doc):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    yield ref["name"], ref["key"]


def k8s_web_problems(docs: Iterable[Doc]) -> list[str]:
    """Services reachable from outside the cluster, and Deployments serving a port without a
    credential from the Secret."""
    docs = list(docs)
    problems = [
        f"Service/{s['metadata']['name']} is {s['spec']['type']}"
        for s in of_kind(docs, "Service")
        if s["spec"].get("type", "ClusterIP") != "ClusterIP"
    ]
    problems += [f"Ingress/{doc['metadata']['name']}" for doc in of_kind(docs, "Ingress")]
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        for container in containers(deployment):
            if not container.get("ports") or name in READ_ONLY_WEB:
                continue
            credentials = [
                var["name"]
                for var in container.get("env", [])
                if _CREDENTIAL.fullmatch(var["name"])
                and var["name"] not in _CLIENT_CREDENTIALS
                and var.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == SECRET_NAME
            ]
            if not credentials:
                problems.append(f"Deployment/{name} serves a port without a credential")
    return problems


if __name__ == "__main__":
    regenerate()
