"""Which app a process runs: `-A`/`CHORUS_APP` names a module (or `module:attr`, or a
`team.toml` file); without one it is the seed team, `chorus.seed`.

Loaded once per spec and cached, so every import of `workers.app.app`, the CLI and the
producer see the same app object.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from messages import ChorusError

if TYPE_CHECKING:
    from workers.app import ChorusApp

DEFAULT_APP = "chorus.seed"
APP_ENV = "CHORUS_APP"

_loaded: dict[str, ChorusApp] = {}
_lock = threading.RLock()


class AppLoadError(ChorusError):
    """The app named by -A / CHORUS_APP could not be loaded; the message says why."""


def app_spec(spec: str | None = None) -> str:
    return spec or os.environ.get(APP_ENV) or DEFAULT_APP


def load_app(spec: str | None = None) -> ChorusApp:
    """The app `spec` names (default: CHORUS_APP, else the seed team), validated."""
    name = app_spec(spec)
    with _lock:
        app = _loaded.get(name)
        if app is None:
            app = _loaded[name] = _load(name)
            app.validate()
        return app


def _load(spec: str) -> ChorusApp:
    from workers.app import ChorusApp

    if spec.endswith(".toml"):
        toml_app = importlib.import_module("chorus.toml_app")
        loaded: ChorusApp = toml_app.load(Path(spec))
        return loaded
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `celery -A` does: the current directory counts
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(
                f"cannot import app module {module_name!r} (from -A or {APP_ENV}): is it on "
                "PYTHONPATH, or in the current directory?"
            ) from None
        raise
    candidates: list[Any]
    if attr:
        candidates = [getattr(module, attr, None)]
    else:
        candidates = [getattr(module, "app", None), *vars(module).values()]
    for candidate in candidates:
        if isinstance(candidate, ChorusApp):
            return candidate
    where = f"{module_name}:{attr}" if attr else module_name
    raise AppLoadError(
        f"{where} holds no chorus.App: define `app = chorus.App(...)` there, or name it as "
        "module:attribute"
    )
