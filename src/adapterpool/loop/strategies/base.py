"""The strategy protocol and the registry.

A strategy changes the loop's mechanics through hooks, each with a neutral default, so a strategy
overrides only what it changes:

- how an attempt trains: :meth:`Strategy.evals_per_epoch`, :meth:`Strategy.pass_rule` (when a
  passing attempt stops), :meth:`Strategy.stop_rule` (other early stops), :meth:`keeps_head`;
- which candidates are tried, in what order: :meth:`skip_transfer` (none at all),
  :meth:`first_try` (an attempt before the one-candidate tries), :meth:`last_try` (no more
  after this one), :meth:`transfer` (the whole transfer phase, replacing the tries);
- where the fallback starts: :meth:`fallback_start`;
- what it adds to the report: :attr:`report_key` and :meth:`report`;
- which combinations it refuses: :meth:`check_combination`, and its option values:
  :meth:`check_config`.

Hooks get the running loop (``run``: :class:`adapterpool.loop.attempts.LoopRun`), which offers
``warm_start``, ``attempt``, ``value``, ``transfer_config`` and the task, pool and config.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import UsageError, did_you_mean
from ...training.stopping import StopRule

if TYPE_CHECKING:
    from ...config import AdaptConfig
    from ..attempts import Attempt, LoopRun

PLAIN = "plain"


class Strategy:
    """Base class of the loop's strategies; one instance per ``adapt`` call, holding its state."""

    name: ClassVar[str]
    help: ClassVar[str]  # the command line's --strategy help and the docs' one-liner
    # The dataclass of its options, whose fields AdaptConfig carries (and the command line, with
    # each field's metadata "flag"); None: no options.
    options: ClassVar[type | None] = None
    # The report.json field this strategy fills with report() (None when not selected).
    report_key: ClassVar[str | None] = None
    # A passing attempt goes on training (settle): a racing probe that passes is continued.
    continues_after_pass: ClassVar[bool] = False
    # Metrics it reads beside the ranking's own (computed in the same scoring pass, where they
    # apply to the task's kind).
    scoring_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: AdaptConfig) -> None:
        self.config = config

    # -- checks ---------------------------------------------------------------------------------
    @classmethod
    def check_config(cls, config: AdaptConfig, selected: bool) -> str | None:
        """A reason to refuse ``config``'s values of this strategy's options (None: fine).
        Asked whether or not it is ``selected``: option values are checked either way."""
        return None

    def check_combination(self, others: Sequence[Strategy]) -> str | None:
        """A reason why this strategy cannot run with ``others`` (None: it can)."""
        return None

    # -- how an attempt trains -------------------------------------------------------------------
    def evals_per_epoch(self) -> int | None:
        """Validation evaluations per epoch of a transfer attempt (None: the fallback's)."""
        return None

    def pass_rule(self, *, fallback: bool, head_kept: bool) -> StopRule | None:
        """When an attempt that meets the threshold stops (None: at the end of its budget). The
        first selected strategy that gives one decides."""
        return None

    def stop_rule(self, *, fallback: bool) -> StopRule | None:
        """Another reason to stop an attempt early (cutoff); asked after the pass rule."""
        return None

    def keeps_head(self, run: LoopRun, adapter_id: str) -> bool:
        """Whether the warm start from ``adapter_id`` keeps the source's classification head."""
        return False

    # -- which candidates --------------------------------------------------------------------------
    def skip_transfer(self, run: LoopRun, scores: Sequence[Any]) -> dict | None:
        """Why no candidate is tried at all (recorded as the report's ``skipped``), or None."""
        return None

    def first_try(self, run: LoopRun, scores: Sequence[Any]) -> Attempt | None:
        """An attempt before the one-candidate tries (it takes one of them); None: no such
        attempt was made."""
        return None

    def last_try(self, run: LoopRun, attempt: Attempt) -> bool:
        """Whether no other candidate is tried after the failed try ``attempt``."""
        return False

    def transfer(self, run: LoopRun, scores: Sequence[Any]) -> Attempt | None:
        """The whole transfer phase in place of the one-candidate tries: the passing attempt, or
        None. Only strategies that override it are asked."""
        raise NotImplementedError

    # -- the fallback and the report -------------------------------------------------------------
    def fallback_start(self, run: LoopRun) -> Attempt | None:
        """The attempt whose trained state the fallback continues (None: from scratch)."""
        return None

    def report(self) -> dict | None:
        """This strategy's part of report.json, under :attr:`report_key`."""
        return None


def overrides(strategy: Strategy | type[Strategy], hook: str) -> bool:
    """Whether ``strategy`` changes ``hook`` (for the loop and for combination checks)."""
    cls = strategy if isinstance(strategy, type) else type(strategy)
    return getattr(cls, hook) is not getattr(Strategy, hook)


# name -> strategy class, in registration order (the canonical order of a selection)
STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Add ``cls`` to :data:`STRATEGIES` under ``cls.name`` (usable as a class decorator).

    A strategy defined outside adapterpool takes its options from its own attributes (only the
    built-in strategies' options are AdaptConfig fields).
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name != name.strip().lower().replace("_", "-"):
        raise UsageError(f"a strategy needs a lower-case name without '_' or spaces, got {name!r}")
    if not getattr(cls, "help", None):
        raise UsageError(f"strategy {name!r} needs a help text")
    if name in STRATEGIES and STRATEGIES[name] is not cls:
        raise UsageError(f"a strategy named {name!r} is registered already")
    STRATEGIES[name] = cls
    return cls


def parse_strategies(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalise ``"early-pass,cutoff"`` or ``["cutoff", "early_pass"]`` to canonical order.

    Canonical order (that of :data:`STRATEGIES`) makes equal selections compare equal and read the
    same in every report. ``plain`` means "none of them", so it combines with nothing.
    """
    if value is None:
        return (PLAIN,)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(item).strip().lower().replace("_", "-") for item in items} - {""}
    for name in sorted(names):
        if name not in STRATEGIES:
            raise UsageError(
                f"unknown strategy {name!r}{did_you_mean(name, STRATEGIES)}; "
                f"choose from {', '.join(STRATEGIES)}"
            )
    if PLAIN in names and len(names) > 1:
        raise UsageError(f"strategy 'plain' combines with nothing; got {sorted(names)}")
    return tuple(name for name in STRATEGIES if name in names) or (PLAIN,)


def applicable_strategies(config: AdaptConfig) -> tuple[str, ...]:
    """Of ``config.strategy``, those that accept the rest of the config (``check_config`` as
    selected): what a default selection becomes, so that a default never refuses a setting the
    user did choose (skip-unrelated reads an accuracy threshold; with one in F1 it is left
    out; a bad option value is still refused, by :func:`check_strategies`). ``plain`` when none
    is left."""
    kept = [name for name in config.strategy
            if STRATEGIES[name].check_config(config, False)
            or not STRATEGIES[name].check_config(config, True)]
    return tuple(kept) or (PLAIN,)


def check_strategies(config: AdaptConfig) -> None:
    """Every registered strategy checks its option values, every selected one its companions;
    the first refusal is a UsageError."""
    for cls in STRATEGIES.values():
        problem = cls.check_config(config, cls.name in config.strategy)
        if problem:
            raise UsageError(problem)
    selected = [STRATEGIES[name](config) for name in config.strategy]
    for strategy in selected:
        problem = strategy.check_combination([s for s in selected if s is not strategy])
        if problem:
            raise UsageError(problem)


def option(default: Any, help: str, flag: str) -> Any:
    """A strategy option: a dataclass field whose ``help`` the command line and the docs show,
    and whose ``flag`` is its command-line option (built by :mod:`adapterpool.cli.main`)."""
    from dataclasses import field

    return field(default=default, metadata={"help": help, "flag": flag})
