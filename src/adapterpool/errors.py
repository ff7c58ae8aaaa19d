"""Errors that are the user's to fix: the command line prints their message, not a traceback."""

from __future__ import annotations


class UsageError(ValueError):
    """An option or argument out of range."""


def user_errors() -> tuple[type[BaseException], ...]:
    from .base_model import BaseModelError
    from .metrics import UnknownMetricError
    from .pool.checks import AdapterRejected
    from .pool.store import PoolError
    from .tasks.task import TaskDataError

    return (UsageError, TaskDataError, AdapterRejected, PoolError, BaseModelError, UnknownMetricError)


def did_you_mean(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
