"""The API's error shape, raised anywhere in the simulator and written by the handlers."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.headers = headers or {}
