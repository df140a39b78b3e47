"""Moved: Chorus no longer patches kombu. Its behaviour lives in the transport classes of
workers/transport.py, which the Celery app selects with `broker_transport`.

Kept only so `from workers.kombu_patches import ahead_of_publish` (dispatcher/dispatcher.py)
keeps working; import it from workers.transport instead, then delete this module.
"""

from __future__ import annotations

from workers.transport import ahead_of_publish

__all__ = ["ahead_of_publish", "install"]


def install() -> None:
    """Does nothing: nothing is patched any more (workers/transport.py)."""
