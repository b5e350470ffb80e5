"""User-facing errors. The CLI prints these as one line; anything else is a bug."""

from __future__ import annotations


class CcguardError(Exception):
    """A problem with the user's input: a file, a line, a field. Printed without a traceback."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)
