"""deploy/k8s is valid Kubernetes, agrees with the agent registry, and KEDA sees every message.

Core resources are validated offline against the Kubernetes JSON schemas that the
kubernetes-validate package bundles (strict: unknown fields fail). KEDA's ScaledObject and
TriggerAuthentication are custom resources without a bundled schema, so `scaled_object_problems`
checks them structurally against what KEDA's redis scaler and scaling modifiers require.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import redis
import yaml
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport.redis import PRIORITY_STEPS, Channel

from dispatcher.embedded import ManagedProcess, wait_until
from dispatcher.metrics import queue_lists
from tests.deploy_checks import command_problems, worker_agents
from workers import settings as settings_module
from workers.registry import AGENTS, PRIORITY_LEVELS, get_agent
from workers.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
"""The oldest Kubernetes these manifests claim to support, and the newest schema bundled."""
KEDA_API = "keda.sh/v1alpha1"
SECRET_NAME = "chorus-secrets"

Doc = dict[str, Any]


def load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_paths() -> list[Path]:
    return sorted(path for path in K8S.rglob("*.yaml") if path.name != "kustomization.yaml")


def deployed() -> list[Doc]:
    """Every resource `kubectl apply -k deploy/k8s` creates."""
    kustomization = load(K8S / "kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in load(K8S / name)]


def example_secret() -> Doc:
    [secret] = load(K8S / "secret.example.yaml")
    return secret


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def containers(doc: Doc) -> list[Doc]:
    pod = doc["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def deployment_agents(deployment: Doc) -> list[str]:
    return [agent for c in containers(deployment) for agent in worker_agents(c["command"])]


def worker_deployments(docs: Iterable[Doc]) -> dict[str, Doc]:
    """Deployments that run `chorus worker`, by name."""
    return {
        doc["metadata"]["name"]: doc
        for doc in of_kind(docs, "Deployment")
        if deployment_agents(doc)
    }


def missing_deployments(registry_names: Iterable[str], docs: Iterable[Doc]) -> list[str]:
    """Registered agents that no Deployment consumes, in registry order."""
    consumed = {a for d in worker_deployments(docs).values() for a in deployment_agents(d)}
    return [name for name in registry_names if name not in consumed]


def missing_scaled_objects(registry_names: Iterable[str], docs: Iterable[Doc]) -> list[str]:
    """Registered agents whose Deployment no ScaledObject scales."""
    docs = list(docs)
    deployments = worker_deployments(docs)
    scaled = {
        agent
        for so in of_kind(docs, "ScaledObject")
        if so["spec"]["scaleTargetRef"]["name"] in deployments
        for agent in deployment_agents(deployments[so["spec"]["scaleTargetRef"]["name"]])
    }
    return [name for name in registry_names if name not in scaled]


def unknown_deployments(registry_names: Iterable[str], docs: Iterable[Doc]) -> list[str]:
    """Deployments that run `chorus worker` for an agent not in the registry."""
    known = set(registry_names)
    return [
        name
        for name, doc in worker_deployments(docs).items()
        if not set(deployment_agents(doc)) <= known
    ]


def priority_lists(queue: str) -> list[str]:
    """The Redis lists kombu fills for `queue`, one per priority step, named by kombu's own
    `Channel._q_for_pri` (priority N > 0 lives in `queue + "\\x06\\x16" + N`)."""
    channel = SimpleNamespace(sep=Channel.sep, priority_steps=PRIORITY_STEPS)
    channel.priority = partial(Channel.priority, channel)
    return [Channel._q_for_pri(channel, queue, step) for step in PRIORITY_STEPS]


def scaled_object_problems(so: Doc, docs: list[Doc]) -> list[str]:
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
    if len(agents) != 1:
        return [*problems, f"{name}: {target['name']} runs {agents}, not one agent"]
    if "replicas" in deployment["spec"]:
        problems.append(f"{name}: {target['name']} sets replicas, which the HPA owns")
    if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
        problems.append(f"{name}: need 1 <= minReplicaCount <= maxReplicaCount")

    wanted = priority_lists(get_agent(agents[0]).queue)
    triggers = spec.get("triggers", [])
    auths = {doc["metadata"]["name"] for doc in of_kind(docs, "TriggerAuthentication")}
    for trigger in triggers:
        meta = trigger.get("metadata", {})
        label = trigger.get("name", "?")
        if trigger.get("type") != "redis":
            problems.append(f"{name}/{label}: trigger type {trigger.get('type')!r}, not redis")
        if not all(isinstance(value, str) for value in meta.values()):
            problems.append(f"{name}/{label}: KEDA metadata values must all be strings")
        if meta.get("listName") not in wanted:
            problems.append(f"{name}/{label}: listName {meta.get('listName')!r} not in {wanted}")
        if not str(meta.get("listLength", "")).isdigit():
            problems.append(f"{name}/{label}: listLength must be a whole number")
        if not re.fullmatch(r"[a-z0-9.-]+:\d+", str(meta.get("address", ""))):
            problems.append(f"{name}/{label}: address must be host:port")
        if trigger.get("authenticationRef", {}).get("name") not in auths:
            problems.append(f"{name}/{label}: authenticationRef names no TriggerAuthentication")
    listed = [trigger.get("metadata", {}).get("listName") for trigger in triggers]
    if sorted(listed, key=str) != sorted(wanted):
        problems.append(f"{name}: triggers read {listed}, want each of {wanted} once")

    # Without scaling modifiers KEDA takes the largest trigger, which undercounts a backlog
    # spread over priorities; the formula must add every trigger.
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


def pod_templates() -> list[tuple[str, Doc]]:
    return [
        (f"{doc['kind']}/{doc['metadata']['name']}", doc)
        for doc in deployed()
        if doc["kind"] in ("Deployment", "StatefulSet")
    ]


def schema_cases() -> list[Any]:
    cases = []
    for path in manifest_paths():
        for doc in load(path):
            if doc["apiVersion"] == KEDA_API:
                continue  # custom resources: scaled_object_problems
            for version in KUBERNETES_VERSIONS:
                label = f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}@{version}"
                cases.append(pytest.param(doc, version, id=label))
    return cases


@pytest.mark.parametrize(("doc", "version"), schema_cases())
def test_manifest_follows_the_kubernetes_schema(doc: Doc, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_rejects_a_misspelled_field() -> None:
    [deployment, _] = load(K8S / "agents" / "router.yaml")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 120
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_applies_every_manifest_but_the_example_secret() -> None:
    listed = set(load(K8S / "kustomization.yaml")[0]["resources"])
    on_disk = {str(path.relative_to(K8S)) for path in manifest_paths()}
    assert listed == on_disk - {"secret.example.yaml"}
    namespaces = {
        doc["metadata"].get("namespace") for doc in deployed() if doc["kind"] != "Namespace"
    }
    assert namespaces == {"chorus"}


def test_every_agent_has_a_deployment_and_a_scaled_object() -> None:
    docs = deployed()
    assert missing_deployments(AGENTS, docs) == []
    assert missing_scaled_objects(AGENTS, docs) == []
    assert unknown_deployments(AGENTS, docs) == []
    for agent in AGENTS:  # one Deployment per agent, so each scales alone
        [deployment] = [
            d for d in worker_deployments(docs).values() if deployment_agents(d) == [agent]
        ]
        assert load(K8S / "agents" / f"{agent}.yaml")[0] == deployment


def test_an_agent_added_to_the_registry_without_manifests_is_reported() -> None:
    docs = deployed()
    registry = [*AGENTS, "translator"]
    assert missing_deployments(registry, docs) == ["translator"]
    assert missing_scaled_objects(registry, docs) == ["translator"]

    # A Deployment alone is not enough: it also needs its ScaledObject.
    [deployment, _] = copy.deepcopy(load(K8S / "agents" / "router.yaml"))
    deployment["metadata"]["name"] = "worker-translator"
    containers(deployment)[0]["command"] = ["chorus", "worker", "translator"]
    docs.append(deployment)
    assert missing_deployments(registry, docs) == []
    assert missing_scaled_objects(registry, docs) == ["translator"]
    assert unknown_deployments(AGENTS, docs) == ["worker-translator"]


def test_every_container_command_exists() -> None:
    problems = {
        f"{kind}/{c['name']}": command_problems(c["command"], AGENTS)
        for kind, doc in pod_templates()
        for c in containers(doc)
        if c["image"].startswith("chorus:")
    }
    assert problems
    assert {name: found for name, found in problems.items() if found} == {}


def test_every_scaled_object_reads_all_priority_lists_of_its_agent_queue() -> None:
    docs = deployed()
    scaled_objects = of_kind(docs, "ScaledObject")
    assert len(scaled_objects) == len(AGENTS)
    problems = [problem for so in scaled_objects for problem in scaled_object_problems(so, docs)]
    assert problems == []
    for so in scaled_objects:
        for trigger in so["spec"]["triggers"]:
            assert trigger["metadata"]["address"] == "redis.chorus.svc.cluster.local:6379"


def test_a_scaled_object_that_misses_part_of_the_backlog_is_reported() -> None:
    docs = deployed()
    so = next(doc for doc in docs if doc["kind"] == "ScaledObject")

    only_plain_list = copy.deepcopy(so)
    only_plain_list["spec"]["triggers"] = so["spec"]["triggers"][:1]
    only_plain_list["spec"]["advanced"]["scalingModifiers"]["formula"] = "p0"
    assert any("want each of" in p for p in scaled_object_problems(only_plain_list, docs))

    other_queue = copy.deepcopy(so)
    other_queue["spec"]["triggers"][1]["metadata"]["listName"] = "agent.somebody_else\x06\x163"
    assert scaled_object_problems(other_queue, docs)

    max_not_sum = copy.deepcopy(so)
    del max_not_sum["spec"]["advanced"]["scalingModifiers"]
    assert any("formula" in p for p in scaled_object_problems(max_not_sum, docs))

    wrong_target = copy.deepcopy(so)
    wrong_target["spec"]["scaleTargetRef"]["name"] = "worker-translator"
    assert scaled_object_problems(wrong_target, docs)

    numbers = copy.deepcopy(so)
    numbers["spec"]["triggers"][0]["metadata"]["listLength"] = 32
    assert any("strings" in p for p in scaled_object_problems(numbers, docs))


def test_priority_sub_lists_are_where_kombu_puts_messages(redis_url: str) -> None:
    """Publish at each priority step through kombu's real Redis transport; count per list."""
    queue_name = f"chorus-test.priorities.{os.getpid()}"
    lists = priority_lists(queue_name)
    assert lists == queue_lists(queue_name)  # the metrics exporter agrees
    assert lists[1] == f"{queue_name}\x06\x163"
    client = redis.Redis.from_url(redis_url)
    exchange = Exchange(queue_name, type="direct")
    queue = Queue(queue_name, exchange, routing_key=queue_name)
    try:
        with Connection(redis_url) as connection:
            producer = Producer(connection.channel(), exchange=exchange)
            for step in PRIORITY_STEPS:
                producer.publish(
                    {"step": step}, routing_key=queue_name, declare=[queue], priority=step
                )
        assert [client.llen(name) for name in lists] == [1, 1, 1, 1]
    finally:
        client.delete(*lists)
    # Chorus sends at "normal" priority by default, which is a sub-list: a scaler that read only
    # the list named after the queue would miss nearly every message.
    normal = PRIORITY_LEVELS["normal"]
    assert normal in PRIORITY_STEPS
    assert lists[PRIORITY_STEPS.index(normal)] != queue_name


def test_secrets_and_config_references_resolve() -> None:
    docs = deployed()
    secret = example_secret()
    assert secret["metadata"]["name"] == SECRET_NAME
    refs = {ref for doc in docs for ref in secret_refs(doc)}
    assert {name for name, _ in refs} == {SECRET_NAME}
    assert {key for _, key in refs} <= set(secret["stringData"])
    configmaps = {doc["metadata"]["name"] for doc in of_kind(docs, "ConfigMap")}
    for kind, doc in pod_templates():
        for container in containers(doc):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps, kind
            defined: list[str] = []
            for var in container.get("env", []):  # $(VAR) expands only earlier variables
                for ref in re.findall(r"\$\((\w+)\)", var.get("value", "")):
                    assert ref in defined, f"{kind}: {var['name']} uses $({ref}) before it is set"
                defined.append(var["name"])


def test_the_example_secret_holds_only_placeholders() -> None:
    values = example_secret()["stringData"]
    assert values
    assert all("CHANGE-ME" in value for value in values.values())


def test_the_config_map_sets_only_real_settings() -> None:
    [config] = of_kind(deployed(), "ConfigMap")
    source = Path(settings_module.__file__).read_text()
    for key in config["data"]:
        assert key.startswith("CHORUS_"), key
        assert f'"{key}"' in source, f"{key} is not read by workers/settings.py"
    Settings.from_env(config["data"])  # every value parses


@pytest.mark.parametrize(("kind", "doc"), pod_templates(), ids=[k for k, _ in pod_templates()])
def test_pods_meet_the_restricted_pod_security_standard(kind: str, doc: Doc) -> None:
    pod = doc["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in containers(doc):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"limits", "requests"} <= set(container["resources"]), kind


def test_workers_shut_down_warm_and_leave_the_replica_count_to_keda() -> None:
    docs = deployed()
    [config] = of_kind(docs, "ConfigMap")
    call_timeout = float(config["data"]["CHORUS_CALL_TIMEOUT"])
    for name, deployment in worker_deployments(docs).items():
        pod = deployment["spec"]["template"]["spec"]
        # room for a call and its one stricter retry; anything longer is redelivered
        assert pod["terminationGracePeriodSeconds"] >= 2 * call_timeout, name
        assert "replicas" not in deployment["spec"], name
        [container] = pod["containers"]
        assert "exec" in container["livenessProbe"], name


def test_redis_requires_a_password_and_keeps_every_message() -> None:
    [redis_set] = [
        d for d in of_kind(deployed(), "StatefulSet") if d["metadata"]["name"] == "redis"
    ]
    [container] = containers(redis_set)
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory_mb = int(args[args.index("--maxmemory") + 1].removesuffix("mb"))
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert maxmemory_mb < 2048  # Redis refuses writes before the kernel kills it


def test_flower_requires_basic_auth_and_is_not_exposed() -> None:
    docs = deployed()
    [flower] = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "flower"]
    env = {var["name"]: var for var in containers(flower)[0]["env"]}
    assert containers(flower)[0]["command"][:2] == ["chorus", "flower"]  # no auth, no start
    assert env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
    for service in of_kind(docs, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def start_probe(command: list[str], hostname: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    probe_env = {**env, "HOSTNAME": hostname}
    return subprocess.Popen(
        argv, env=probe_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_worker_liveness_probe_answers_for_its_own_pod_only(
    stack_env: dict[str, str], log_dir: Path
) -> None:
    [deployment, _] = load(K8S / "agents" / "router.yaml")
    [container] = containers(deployment)
    probe = container["livenessProbe"]["exec"]["command"]
    chorus = str(Path(sys.executable).parent / "chorus")
    worker = ManagedProcess(
        "probe-worker", [chorus, *container["command"][1:], "-c", "2"], stack_env, log_dir
    )
    try:
        wait_until(
            lambda: " ready." in worker.log_path.read_text(errors="replace") or not worker.alive(),
            timeout=60,
            what="the worker",
        )
        assert worker.alive(), worker.log_tail()
        # Both at once: the other pod's probe waits out its ping timeout, ours answers at once.
        started = time.monotonic()
        other = start_probe(probe, "no-such-pod-7f9c", stack_env)
        own = start_probe(probe, socket.gethostname(), stack_env)
        assert own.wait(60) == 0
        assert other.wait(60) == 1
        assert time.monotonic() - started < container["livenessProbe"]["timeoutSeconds"]
    finally:
        worker.stop()
