"""Processes under ``accelerate launch``: which one is the main one, and how the main process's
work (ranking, publishing) reaches the others, errors included.

One process (no launcher) is the common case: then every helper here is a plain call.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, TypeVar

from accelerate import PartialState
from accelerate.utils import broadcast_object_list, parse_flag_from_env

from ..errors import AdapterPoolError

T = TypeVar("T")


def process_state() -> PartialState:
    """This process's place in an ``accelerate launch`` run (one process: the main one).

    ``PartialState`` is cheap (no model), but it ignores ``ACCELERATE_USE_CPU``, which
    ``Accelerator`` honours: created without ``cpu=`` in a multi-CPU run it would settle on a
    single non-distributed process, and ``train``'s ``Accelerator`` would then inherit that shared
    state and train every process on all the data, unsynchronised. So the flag is passed on here.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def is_main_process() -> bool:
    """Whether this process may write files and change the pool (always, without a launcher)."""
    return process_state().is_main_process


def shareable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling, else a stand-in of the same family with its message
    (an error on the main process is raised in every process, so all exit the same way).
    """
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to pickle: send the message instead
        kind = AdapterPoolError if isinstance(exc, AdapterPoolError) else RuntimeError
        return kind(f"{type(exc).__name__} on the main process: {exc}")


def on_main_process(state: PartialState, work: Callable[[], T]) -> T:
    """Run ``work`` on the main process only and hand its value to every process.

    Under ``accelerate launch`` the others wait in the broadcast until the main process is done,
    so this is also a barrier. An error on the main process is raised in every process rather
    than leaving the others waiting for a value that never comes. One process: ``work()``.
    """
    if state.num_processes == 1:
        return work()
    message: list[Any] = [None]
    error: Exception | None = None
    if state.is_main_process:
        try:
            message[0] = (True, work())
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others are told
            error = exc
            message[0] = (False, shareable(exc))
    broadcast_object_list(message, from_process=0)
    ok, value = message[0]
    if error is not None:
        raise error
    if not ok:
        raise value
    return value
