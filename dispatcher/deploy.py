"""Deployment files generated from an app's agents, so they can never disagree with it.

    spec = DeploySpec(app_name="launch", app_ref="launch_team",
                      agents=(DeployAgent("scout", "agent.scout"), ...))
    compose_file(spec)            # docker-compose.yml   (chorus -A launch_team deploy compose)
    write_k8s(spec, Path("k8s"))  # Kubernetes tree      (chorus -A launch_team deploy k8s k8s)

The module imports no app and no YAML library: it renders text templates (dispatcher/deploy_*.py)
whose comments users read. The repository's own docker-compose.yml and deploy/k8s/ are this
output for the built-in seed team (tests/test_deploy_generator.py fails when they drift).

Errors: DeploySpecError (names that cannot be deployed; `problems` lists them) and
DirectoryInUseError (write_k8s would clobber files it did not generate), both DeployError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dispatcher import deploy_compose, deploy_k8s
from dispatcher.deploy_console import CONSOLE
from dispatcher.deploy_k8s import DirectoryInUseError
from dispatcher.deploy_spec import (
    DEFAULT_IMAGE,
    DeployAgent,
    DeployError,
    DeploySpec,
    DeploySpecError,
    ExtraService,
    SecretKey,
)

EXTRA_SERVICES: tuple[ExtraService, ...] = (CONSOLE,)
"""Services shipped beside the built-in ones in every generated file set: the web console (see
ExtraService for what a web surface must do to stay behind auth); regenerate the repository's
files after a change (`python -m tests.deploy_checks`)."""


def compose_file(spec: DeploySpec, extra_services: Sequence[ExtraService] | None = None) -> str:
    """The whole docker-compose.yml for the app, header comments included."""
    return deploy_compose.compose_file(spec, _extras(extra_services))


def k8s_files(
    spec: DeploySpec, extra_services: Sequence[ExtraService] | None = None
) -> dict[str, str]:
    """Relative path -> text of the app's whole deploy/k8s tree."""
    return deploy_k8s.k8s_files(spec, _extras(extra_services))


def write_k8s(
    spec: DeploySpec,
    directory: Path,
    *,
    force: bool = False,
    extra_services: Sequence[ExtraService] | None = None,
) -> list[Path]:
    """Write k8s_files(spec) under `directory`; see dispatcher.deploy_k8s.write_k8s."""
    return deploy_k8s.write_k8s(
        spec, directory, force=force, extra_services=_extras(extra_services)
    )


def _extras(extra_services: Sequence[ExtraService] | None) -> Sequence[ExtraService]:
    return EXTRA_SERVICES if extra_services is None else extra_services


__all__ = [
    "DEFAULT_IMAGE",
    "EXTRA_SERVICES",
    "DeployAgent",
    "DeployError",
    "DeploySpec",
    "DeploySpecError",
    "DirectoryInUseError",
    "ExtraService",
    "SecretKey",
    "compose_file",
    "k8s_files",
    "write_k8s",
]
