"""The one error type for inputs that cannot be read: the CLI turns it into exit code 2."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """An input file is missing, malformed or not what the gate understands.

    `str(err)` is the whole message: the file first, then the reason.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
