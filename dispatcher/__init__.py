"""Producer side: submit work, build workflows, wait for answers; plus the `chorus` CLI.

`from dispatcher import Dispatcher` loads the producer on first use, so the CLI's own import
of this package (for `chorus --help`) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dispatcher.dispatcher import Dispatcher, NoWorkerError, TaskHandle, TaskOutcome

__all__ = ["Dispatcher", "NoWorkerError", "TaskHandle", "TaskOutcome"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dispatcher import dispatcher

        return getattr(dispatcher, name)
    raise AttributeError(f"module 'dispatcher' has no attribute {name!r}")
