"""Error types shared across the service.

`ConfigError` is raised for anything wrong with the configuration found at start-up; the CLI prints its message on
one line and exits 2. `APIError` is raised inside request handlers and rendered as `{"error", "detail"}` JSON.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A start-up configuration problem. The message names the offending variable and says what to do."""


class APIError(Exception):
    """An error answered to the client as JSON `{"error": code, "detail": text}` with an HTTP status."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}
