"""User-facing errors.

Every problem caused by user input (a bad path, an unknown dataset, an unsupported model kind, ...)
is raised as :class:`DistilViTError` with a message that says what was wrong and what to do. The CLI
turns it into ``error: <message>`` on stderr and exit code 2, never a traceback.
"""


class DistilViTError(Exception):
    """An error caused by user input. ``str(err)`` is the complete message shown to the user."""

    exit_code = 2


class DataError(DistilViTError):
    """A dataset, image or caption problem."""


class ModelError(DistilViTError):
    """A model name/path/kind problem."""
