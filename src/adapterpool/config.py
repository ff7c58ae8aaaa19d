"""Settings of a training run (:class:`TrainConfig`) and of the whole loop (:class:`AdaptConfig`).

Plain dataclasses with ``metadata={"help": ...}`` on every field (as peft's ``LoraConfig``): the
command line builds its options from these fields, so every default exists exactly once. Nothing
heavy is imported here, so that the command line starts fast.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from .errors import UsageError, did_you_mean
from .loop.strategies import (
    STRATEGIES,
    CompositionOptions,
    CutoffOptions,
    EarlyPassOptions,
    RacingOptions,
    SettleOptions,
    SkipUnrelatedOptions,
    WarmFallbackOptions,
    applicable_strategies,
    check_strategies,
    parse_strategies,
)
from .task_kinds import (
    DEFAULT_METRIC,
    DEFAULT_SCORING_SAMPLES,
    DEFAULT_STRATEGY,
    TASK_KINDS,
    THRESHOLD_METRICS,
    check_threshold_metric,
    get_kind,
)

# Validation metrics an attempt is selected and gated on, of every task kind (a task accepts
# its kind's: adapterpool.task_kinds).
SELECTION_METRICS = THRESHOLD_METRICS
_BY_KIND = "; ".join(
    f"{', '.join(ms)} ({', '.join(k for k, s in TASK_KINDS.items() if s.threshold_metrics == ms)})"
    for ms in dict.fromkeys(s.threshold_metrics for s in TASK_KINDS.values()))
SUBSET_STRATEGIES = ("random", "prefilter")  # how the N candidates are chosen (prefilter.py)
SIMILARITIES = ("cosine", "frechet")  # task-summary similarities (adapterpool.ranking.task_summary)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Budget and optimiser settings; ``epochs`` is the most the run may take."""

    epochs: float = field(default=3, metadata=_help("most epochs the run may take (fractions ok)"))
    learning_rate: float | None = field(
        default=None,
        metadata=_help("AdamW peak learning rate (None: the PEFT method's, e.g. 1e-3 for LoRA, "
                       "3e-2 for prompt tuning; see adapterpool.models.peft_methods)"),
    )
    batch_size: int = field(default=32, metadata=_help("training batch size"))
    eval_batch_size: int = field(default=128, metadata=_help("evaluation batch size"))
    warmup_ratio: float = field(default=0.06, metadata=_help("share of steps in linear warm-up"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm"))
    max_length: int = field(default=128, metadata=_help("tokens kept per example"))
    evals_per_epoch: int = field(default=2, metadata=_help("validation evaluations per epoch"))
    patience: float = field(
        default=3, metadata=_help("epochs without a gain in validation before early stopping "
                                  "(fractions ok; the same whatever evals_per_epoch is)")
    )
    selection_metric: str = field(
        default="accuracy", metadata=_help("validation metric that picks the best weights")
    )
    seed: int = field(default=0, metadata=_help("seed of shuffling and initialisation"))
    max_new_tokens: int | None = field(
        default=None,
        metadata=_help("text2text evaluation: most tokens generated per example (None: "
                       "adapterpool.training.generation.DECODING's 32)"),
    )
    num_beams: int = field(
        default=1,
        metadata=_help("text2text evaluation: beams of beam search (1: greedy search); "
                       "deterministic either way, more beams cost more time per evaluation"),
    )
    schedule_epochs: float | None = field(
        default=None,
        metadata=_help(
            "epochs the warm-up/decay schedule spans (None: epochs); longer than epochs when the "
            "run is the first part of a longer budget, as a racing probe is"
        ),
    )

    def __post_init__(self) -> None:
        if self.selection_metric not in SELECTION_METRICS:
            raise UsageError(
                f"selection metric {self.selection_metric!r} unknown; "
                f"use one of {SELECTION_METRICS}"
            )
        if not self.epochs > 0:
            raise UsageError(f"epochs must be > 0, got {self.epochs}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise UsageError(f"learning_rate must be > 0 (or None), got {self.learning_rate}")
        if not self.patience > 0:
            raise UsageError(f"patience must be > 0 epochs, got {self.patience}")
        if self.evals_per_epoch < 1:
            raise UsageError(f"evals_per_epoch must be >= 1, got {self.evals_per_epoch}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be >= 1 (or None), got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise UsageError(f"num_beams must be >= 1, got {self.num_beams}")

    def as_dict(self) -> dict:
        """The settings; ``schedule_epochs``, ``max_new_tokens`` and ``num_beams`` only when set
        (not at their defaults), so that records (and the demo pool's cache key) from before they
        existed stay equal.
        """
        data = asdict(self)
        for name in ("schedule_epochs", "max_new_tokens"):
            if data[name] is None:
                del data[name]
        if data["num_beams"] == 1:
            del data["num_beams"]
        return data


# Old keyword arguments of `adapt` that name a field differently (kept for one release).
LEGACY_NAMES = {"epochs": "transfer_epochs", "train_config": "fallback"}


@dataclass
class AdaptConfig(CompositionOptions, RacingOptions, WarmFallbackOptions, SkipUnrelatedOptions,
                  CutoffOptions, SettleOptions, EarlyPassOptions):
    """Every setting of the loop (:func:`adapterpool.adapt`); JSON-able via ``to_dict``.

    The built-in strategies' options are fields too: each is declared by its strategy's module
    (:mod:`adapterpool.loop.strategies`), with its help and command-line flag, and checked there.
    """

    metric: str = field(
        default=DEFAULT_METRIC, metadata=_help(
            "transferability metric that ranks the candidates (left at the default on a task "
            "kind it does not apply to, the kind's default: target-loglik for text2text)")
    )
    subset: int = field(default=5, metadata=_help(
        "candidates scored (N): drawn at random, or kept by the prefilter (subset_strategy)"))
    subset_strategy: str = field(
        default="random",
        metadata=_help(
            "how the N candidates are chosen: random (a seeded draw, the published method) or "
            "prefilter (the N whose task summaries are most similar to the target's, out of the "
            "whole pool, from one base-model pass: for pools of thousands)"
        ),
    )
    prefilter_similarity: str = field(
        default="cosine",
        metadata=_help(f"prefilter: task-summary similarity, one of {', '.join(SIMILARITIES)}"),
    )
    max_tries: int = field(
        default=2,
        metadata=_help("transfer attempts before the fallback (K); 0: standard LoRA only"),
    )
    threshold: float | None = field(
        default=None,
        metadata=_help("validation score at or above which an attempt passes; None (no "
                       "threshold): the best-ranked candidate is trained with the fallback's "
                       "budget, until early stopping, and kept (one transfer, no fallback)"),
    )
    threshold_metric: str = field(
        default="accuracy",
        metadata=_help(f"metric of the threshold, by task kind: {_BY_KIND}; left at the default "
                       "on a text2text task, rouge_l"),
    )
    transfer_epochs: float = field(default=2, metadata=_help("budget of one transfer attempt"))
    max_samples: int | None = field(
        default=DEFAULT_SCORING_SAMPLES, metadata=_help(
            "target training examples scored per candidate (None: all); scoring costs one "
            "forward pass over them a candidate, more examples rank more reliably")
    )
    fallback: TrainConfig = field(
        default_factory=TrainConfig,
        metadata=_help(
            "standard-LoRA fallback's budget and optimiser; transfer attempts use the same "
            "optimiser settings with transfer_epochs. Its seed and selection_metric follow this "
            "config's seed and threshold_metric (see resolved_fallback())"
        ),
    )
    strategy: tuple[str, ...] = field(
        default=DEFAULT_STRATEGY,
        metadata=_help(
            "time-saving strategies, combinable (comma-separated on the command line); names and "
            "descriptions in adapterpool.loop.strategies.STRATEGIES. The default is the family "
            "benchmark's cheapest at kept accuracy (adapterpool.DEFAULT_STRATEGY; 'plain' is the "
            "published loop); a default member that cannot apply (skip-unrelated with a "
            "threshold in F1) is left out, and a kind with its own default uses it (for_kind)"
        ),
    )
    contribute: bool = field(
        default=False, metadata=_help("add a passing adapter to the pool, its parent recorded")
    )
    seed: int = field(default=0, metadata=_help("seed of every random choice"))
    def __post_init__(self) -> None:
        self.strategy = parse_strategies(self.strategy)
        if self.strategy == DEFAULT_STRATEGY:  # left at the default (canonical order): what applies
            self.strategy = applicable_strategies(self)
        if isinstance(self.fallback, Mapping):
            self.fallback = _train_config_from_dict(self.fallback)
        if self.threshold_metric not in SELECTION_METRICS:
            raise UsageError(
                f"threshold metric {self.threshold_metric!r} unknown; "
                f"use one of {SELECTION_METRICS}"
            )
        checks = [
            (self.max_tries >= 0, f"max_tries must be >= 0, got {self.max_tries}"),
            (self.subset >= 1, f"subset must be >= 1, got {self.subset}"),
            (self.subset_strategy in SUBSET_STRATEGIES,
             f"subset_strategy must be one of {SUBSET_STRATEGIES}, got {self.subset_strategy!r}"),
            (self.prefilter_similarity in SIMILARITIES,
             f"prefilter_similarity must be one of {SIMILARITIES}, "
             f"got {self.prefilter_similarity!r}"),
            (self.transfer_epochs > 0, f"transfer epochs must be > 0, got {self.transfer_epochs}"),
            (self.max_samples is None or self.max_samples >= 1,
             f"max_samples must be >= 1 or None, got {self.max_samples}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        check_strategies(self)  # each strategy checks its options and its companions
        defaults = TrainConfig()
        if self.fallback.seed not in (self.seed, defaults.seed) or (
            self.fallback.selection_metric not in (self.threshold_metric, defaults.selection_metric)
        ):
            warnings.warn(
                f"AdaptConfig: the fallback's seed ({self.fallback.seed}) and selection metric "
                f"({self.fallback.selection_metric}) are not used: every attempt uses the loop's "
                f"seed ({self.seed}) and threshold_metric ({self.threshold_metric})",
                UserWarning,
                stacklevel=3,
            )

    def for_kind(self, kind: str) -> AdaptConfig:
        """The config as run on a task of ``kind``: a metric or threshold metric left at its
        default that does not apply to the kind becomes the kind's own default (text2text:
        target-loglik, rouge_l); any other that does not apply is a UsageError."""
        from .metrics import check_metric_kind

        spec = get_kind(kind)
        changes = {}
        if self.metric == DEFAULT_METRIC and kind not in _metric_kinds(self.metric):
            changes["metric"] = spec.default_metric
        if self.threshold_metric == field_default(AdaptConfig, "threshold_metric") and (
                self.threshold_metric not in spec.threshold_metrics):
            changes["threshold_metric"] = spec.threshold_metrics[0]
        if spec.default_strategy != DEFAULT_STRATEGY and (
                self.strategy == replace(self, strategy=DEFAULT_STRATEGY).strategy):
            changes["strategy"] = spec.default_strategy
        config = replace(self, **changes) if changes else self
        check_metric_kind(config.metric, kind)
        check_threshold_metric(kind, config.threshold_metric)
        return config

    def resolved_fallback(self) -> TrainConfig:
        """The fallback's TrainConfig as run: seed and selection metric are the loop's."""
        return replace(self.fallback, seed=self.seed, selection_metric=self.threshold_metric)

    def transfer_config(self) -> TrainConfig:
        """A transfer attempt's TrainConfig: the fallback's settings, ``transfer_epochs`` long
        (the fallback's epochs when there is no threshold),
        evaluated as often as the first selected strategy that sets it says (early-pass,
        settle), else as the fallback."""
        asked = (STRATEGIES[name](self).evals_per_epoch() for name in self.strategy)
        evals = next((e for e in asked if e is not None), self.fallback.evals_per_epoch)
        # no threshold: nothing to pass, so the transfer trains as long as the fallback would
        epochs = self.transfer_epochs if self.threshold is not None else self.fallback.epochs
        return replace(self.resolved_fallback(), epochs=epochs, evals_per_epoch=evals)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategy"] = list(self.strategy)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdaptConfig:
        """The inverse of ``to_dict``; unknown keys are a UsageError naming the closest field."""
        _check_names(data, {f.name for f in fields(cls)}, "AdaptConfig")
        return cls(**dict(data))

    def with_overrides(self, overrides: Mapping[str, Any]) -> AdaptConfig:
        """A copy with ``overrides`` applied; the old names ``epochs`` and ``train_config`` of
        :func:`adapterpool.adapt`'s keyword arguments map to ``transfer_epochs`` and ``fallback``.
        """
        _check_names(overrides, {f.name for f in fields(self)} | set(LEGACY_NAMES), "adapt setting")
        mapped = {LEGACY_NAMES.get(name, name): value for name, value in overrides.items()}
        if mapped.get("fallback", 0) is None:  # the old default train_config=None
            mapped.pop("fallback")
        return replace(self, **mapped)


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` (the command line's option defaults)."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _metric_kinds(name: str) -> tuple[str, ...]:
    from .metrics import get_metric

    return get_metric(name).kinds


def field_help(cls: type, name: str) -> str:
    return next(f.metadata.get("help", "") for f in fields(cls) if f.name == name)


def _check_names(data: Mapping[str, Any], known: set[str], what: str) -> None:
    for name in data:
        if name not in known:
            raise UsageError(f"unknown {what} {name!r}{did_you_mean(name, sorted(known))}")


def _train_config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    _check_names(data, {f.name for f in fields(TrainConfig)}, "TrainConfig field")
    return TrainConfig(**dict(data))
