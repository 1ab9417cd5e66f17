"""The errors of running ``jmlgeo``: each message says what is wrong and what to do."""

from __future__ import annotations


class RunError(Exception):
    """``jmlgeo`` failed; ``str(error)`` is the command's own message, word for word."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.stderr = stderr


class ExecutableNotFoundError(RunError):
    """No ``jmlgeo`` executable: the message says where we looked and what to do."""


class CancelledError(RunError):
    """The user cancelled; the child process (and its children) were stopped."""
