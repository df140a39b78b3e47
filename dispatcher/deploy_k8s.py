"""`chorus deploy k8s DIR`: the Kubernetes manifests of one app, from its agents.

One Deployment per agent, each scaled by a KEDA ScaledObject on the sum of its own queue's
priority lists, beside the plumbing every app needs (namespace, ConfigMap, example Secret, Redis,
PostgreSQL, network policies, KEDA's Redis credentials, the auditor, Flower, the exporter). The
namespace is the app's name, so two apps in one cluster never share Redis or a Secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dispatcher import deploy_k8s_infra as infra
from dispatcher import deploy_k8s_pods as pods
from dispatcher.deploy_spec import (
    DEFAULT_CONCURRENCY,
    PRIORITY_STEPS,
    DeployAgent,
    DeployError,
    DeploySpec,
    ExtraService,
    SecretKey,
    check,
    check_extras,
    header,
    is_generated,
    k8s_name,
    priority_lists,
    quote,
    render,
    scaler_target,
)

_INFRA = ("namespace", "configmap", "redis", "postgres", "networkpolicy", "keda-auth")
_PODS = ("auditor", "flower", "metrics")
_RESERVED_STEMS = frozenset({*_INFRA, *_PODS, "kustomization", "secret.example", "agents"})


class DirectoryInUseError(DeployError):
    """write_k8s was pointed at a directory holding files it did not generate.

    The CLI should print the message, which names the files and both ways out, and exit
    non-zero; `foreign` lists the files relative to `directory`."""

    def __init__(self, directory: Path, foreign: list[str], *, forceable: bool = True) -> None:
        self.directory = directory
        self.foreign = list(foreign)
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        shown = ", ".join(foreign[:5]) + more
        way_out = (
            "write into an empty or new directory, or pass --force to write anyway (those "
            "files stay as they are; generated files of the same name are replaced)"
            if forceable
            else "move them away first"
        )
        super().__init__(
            f"{directory} holds files that `chorus deploy k8s` did not generate ({shown}): "
            + way_out
        )


def k8s_files(spec: DeploySpec, extra_services: Sequence[ExtraService] = ()) -> dict[str, str]:
    """Relative path -> text of every file of the app's deploy/k8s tree, kustomization first."""
    check(spec)
    check_extras(spec, extra_services, _RESERVED_STEMS)
    base = {"marker": header(spec, "k8s"), "namespace": spec.app_name, "app": spec.app_name}
    pod = {
        **base,
        "image": spec.image,
        "pod_security": pods.POD_SECURITY,
        "container_security": pods.CONTAINER_SECURITY,
        "env_from": pods.ENV_FROM,
        "redis_env": pods.REDIS_ENV,
    }
    secret_keys = [key for extra in extra_services for key in extra.secret_keys]
    files = {
        "namespace.yaml": render(infra.NAMESPACE, **base),
        "configmap.yaml": render(
            infra.CONFIGMAP,
            **base,
            app_ref="" if spec.app_ref is None else f"CHORUS_APP: {quote(spec.app_ref)}",
            concurrency=str(DEFAULT_CONCURRENCY),
        ),
        "redis.yaml": render(infra.REDIS, **base),
        "postgres.yaml": render(infra.POSTGRES, **base),
        "networkpolicy.yaml": render(infra.NETWORKPOLICY, **base),
        "keda-auth.yaml": render(infra.KEDA_AUTH, **base),
        "auditor.yaml": render(pods.AUDITOR, **pod),
        "flower.yaml": render(pods.FLOWER, **pod),
        "metrics.yaml": render(pods.METRICS, **pod),
        **{
            f"{extra.name}.yaml": f"{base['marker']}\n{extra.k8s(spec)}" for extra in extra_services
        },
        **{f"agents/{agent.name}.yaml": _agent(agent, pod) for agent in spec.agents},
    }
    kustomization = render(
        infra.KUSTOMIZATION,
        marker=base["marker"],
        namespace=spec.app_name,
        title="Chorus" if spec.app_ref is None else f"Chorus app `{spec.app_name}`",
        resources="".join(f"- {path}\n" for path in files),
        images=_images(spec.image),
    )
    return {
        "kustomization.yaml": kustomization,
        "secret.example.yaml": _secret(base, secret_keys),
        **files,
    }


def write_k8s(
    spec: DeploySpec,
    directory: Path,
    *,
    force: bool = False,
    extra_services: Sequence[ExtraService] = (),
) -> list[Path]:
    """Write k8s_files(spec) under `directory` (created if missing); return the paths written.

    Refuses (DirectoryInUseError, nothing written) when `directory` holds a file it did not
    generate, unless `force`: a user who points it at the wrong directory loses nothing. Files it
    generated earlier that the app no longer has (a removed agent) are deleted, so that
    `kubectl apply -f agents/` cannot bring the agent back. Hidden files are left alone.
    """
    files = k8s_files(spec, extra_services)
    if directory.exists() and not directory.is_dir():
        raise DeployError(f"{directory} is a file: name a directory for the manifests")
    blocked = [name for name in files if (directory / name).is_dir()]
    if blocked:  # a directory where a file goes: not even --force can write it
        raise DirectoryInUseError(directory, blocked, forceable=False)
    foreign: list[str] = []
    stale: list[Path] = []
    for path in sorted(directory.rglob("*")) if directory.exists() else []:
        relative = path.relative_to(directory)
        if path.is_dir() or any(part.startswith(".") for part in relative.parts):
            continue
        if not (path.is_file() and not path.is_symlink() and _is_ours(path)):
            foreign.append(relative.as_posix())
        elif relative.as_posix() not in files:
            stale.append(path)
    if foreign and not force:
        raise DirectoryInUseError(directory, foreign)
    written = []
    for name, text in files.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():  # replace the link itself, never write through it
            target.unlink()
        target.write_bytes(text.encode())
        written.append(target)
    for path in stale:
        path.unlink()
    return written


def _is_ours(path: Path) -> bool:
    with path.open("rb") as file:
        first = file.readline(400)
    return is_generated(first.decode(errors="replace"), "k8s")


def _agent(agent: DeployAgent, pod: dict[str, str]) -> str:
    target = str(scaler_target(agent))
    names = [f"p{step}" for step in PRIORITY_STEPS]
    triggers = "".join(
        render(
            pods.TRIGGER,
            name=name,
            namespace=pod["namespace"],
            list_name=quote(list_name),
            target=target,
        )
        for name, list_name in zip(names, priority_lists(agent.queue), strict=True)
    )
    concurrency = (
        ""
        if agent.concurrency is None
        else render(pods.CONCURRENCY_ENV, concurrency=str(agent.concurrency))
    )
    return render(
        pods.AGENT,
        **pod,
        agent=agent.name,
        agent_quoted=quote(agent.name),
        queue=agent.queue,
        deployment=k8s_name(agent.name),
        concurrency=concurrency,
        target=target,
        formula=" + ".join(names),
        triggers=triggers,
    )


def _secret(base: dict[str, str], keys: list[SecretKey]) -> str:
    for key in keys:
        if "CHANGE-ME" not in key.placeholder:
            raise ValueError(f"secret key {key.key!r}: the placeholder must contain CHANGE-ME")
    return render(
        infra.SECRET_EXAMPLE,
        **base,
        extra_literals="".join(f"#     --from-literal={key.key}={key.create} \\\n" for key in keys),
        extra_keys="".join(
            f"# {key.comment}\n{key.key}: {quote(key.placeholder)}\n" for key in keys
        ),
    )


def _images(image: str) -> str:
    """The kustomize `images:` entry: a local build name (no registry, like the default) cannot
    be pulled by a cluster, so it is mapped to a registry to fill in; a full name stays as is."""
    if "/" in image or "@" in image:
        return ""
    name, _, tag = image.partition(":")
    return render(infra.LOCAL_IMAGE, name=name, tag=quote(tag or "latest"))
