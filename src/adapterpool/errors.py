"""Every exception adapterpool raises on purpose, in one leaf module (it imports nothing of the
package, as scikit-learn's ``exceptions.py``). All derive from :class:`AdapterPoolError`, which the
command lines catch to print the message instead of a traceback; each also keeps the builtin base
(``ValueError``/``RuntimeError``) callers already catch."""

from __future__ import annotations


class AdapterPoolError(Exception):
    """Base of every error that is the user's to fix; the message says what and how."""


class UsageError(AdapterPoolError, ValueError):
    """An option or argument out of range."""


class TaskDataError(AdapterPoolError, ValueError):
    """Unusable task data; the message names the file/field/package and the fix."""


class MetricInputError(AdapterPoolError, ValueError):
    """The arrays given to a metric are unusable; the message says which and why."""


class UnknownMetricError(AdapterPoolError, ValueError):
    """A metric name that is not in the registry."""


class BaseModelError(AdapterPoolError, RuntimeError):
    """The base model cannot be found or loaded; the message says how to provide it."""


class PeftConfigError(AdapterPoolError, ValueError):
    """A PEFT method or config that is unknown, invalid, or that cannot run on the base model;
    raised before anything is trained or written, naming the method, field or reason."""


class IncompatibleAdapterError(AdapterPoolError, ValueError):
    """An adapter that cannot warm-start a model (another method, base model or tensor layout)."""


class AdapterRejected(AdapterPoolError, ValueError):
    """The adapter may not enter the pool; the message says which rule it broke."""


class TaskSummaryError(AdapterRejected):
    """A task summary (an adapter's task embedding) that is unusable; the message says why."""


class PoolError(AdapterPoolError, RuntimeError):
    """A pool cannot be opened or an operation on it is impossible."""


class DuplicateAdapterError(PoolError):
    """The same weights (same sha256) are already in the pool."""

    def __init__(self, message: str, existing_id: str) -> None:
        super().__init__(message)
        self.existing_id = existing_id


def did_you_mean(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_error(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` on one line (PyTorch puts the reason on later lines), cut to ``limit``."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
