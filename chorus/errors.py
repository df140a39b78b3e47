"""The errors users catch: one tree under `ChorusError`."""

from __future__ import annotations

from messages.errors import ChorusError, InvalidMessageError
from workers.blocks import BlockError
from workers.loading import AppLoadError
from workers.registry import UnknownAgentError


class AppDefinitionError(ChorusError):
    """An app declaration that cannot run; raised when it is declared or loaded, naming the
    fix."""


__all__ = [
    "AppDefinitionError",
    "AppLoadError",
    "BlockError",
    "ChorusError",
    "InvalidMessageError",
    "UnknownAgentError",
]
