"""The task kinds adapterpool handles, in one table (as peft's ``auto.py`` maps task types to
model classes): per kind, the transformers Auto class its models are built with, the peft
``TaskType`` its adapters carry, how its inputs are prepared (tokenizer or image processor),
whether examples have class labels, and the threshold metrics an attempt can be gated on.

Everything that differs between kinds is read from here; the loop, the pool and the scoring stay
one pipeline. Nothing heavy is imported, so that the command line lists kinds and metrics fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import TaskDataError, UsageError, did_you_mean

# The metric `rank` and `adapt` use on classification tasks unless told otherwise
# (adapterpool.DEFAULT_METRIC): LogME, whose first choice was the soonest to reach standard LoRA's
# level on each of the family benchmark's 7 targets with a related source (3-seed ground truth,
# benchmarks/results/family-pool.md; GBC, NLEEP and the linear probe's too, knn's not), and the
# lowest regret@1 on the 21-adapter pool (benchmarks/results/h200/README.md).
DEFAULT_METRIC = "logme"
# Target examples each candidate is scored on unless told otherwise: scoring is one forward pass a
# candidate over them, so on a CPU with a small target this sample is most of what ranking costs
# (256: the prefilter and 5 MiniLM candidates in 4-21 CPU s, 4-10% of standard LoRA on the family
# benchmark's targets); 128 misranked a pair task's relative with 2 of 3 seeds (family-pool.md).
DEFAULT_SCORING_SAMPLES = 256
# The strategies `adapt` runs unless told otherwise (adapterpool.DEFAULT_STRATEGY; per kind in the
# table below): the cheapest at kept accuracy on the family benchmark's 11 learnable targets
# (choose_default_strategy's rule: accuracy >= 0.995 of standard LoRA on average, no target above
# 1.05x its time; benchmarks/results/family-pool.md). text2text keeps the published loop
# (plain): skip-unrelated reads an accuracy, and early-pass's four evaluations an epoch decode.
# (in the strategies' canonical order: that of adapterpool.loop.strategies.STRATEGIES)
DEFAULT_STRATEGY = ("early-pass", "cutoff", "skip-unrelated", "warm-fallback")
CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "f1_weighted")
GENERATION_METRICS = ("rouge_l", "exact_match", "chrf")
# Attention query/value projections as model families name them (ViT is q_proj/v_proj since
# transformers 5, query/value before; BERT's are query/value; T5's q/v).
ATTENTION_QV = (("q_proj", "v_proj"), ("query", "value"), ("q", "v"))


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TaskKindSpec:
    """What one task kind needs from models, data preparation and evaluation."""

    name: str = field(metadata=_help("the kind's name (meta.json 'task_type', Task.kind)"))
    auto_class: str = field(metadata=_help("transformers Auto class its models are built with"))
    peft_task_type: str | None = field(
        metadata=_help("peft TaskType value of its adapters (None: peft's plain PeftModel, as "
                       "peft's image-classification examples use)"))
    inputs: Literal["tokenizer", "image_processor"] = field(
        metadata=_help("what turns an example into model inputs"))
    labelled: bool = field(metadata=_help("whether examples carry class labels (0..C-1)"))
    threshold_metrics: tuple[str, ...] = field(
        metadata=_help("validation metrics an attempt can be gated on; the first is the default"))
    default_metric: str = field(metadata=_help("transferability metric ranking by default"))
    family: str = field(metadata=_help(
        "adapters of kinds of one family can warm-start each other's targets (a text-pair "
        "classifier warm-starts a single-text one); other families are never candidates"))
    task_summary: bool = field(metadata=_help(
        "whether contributed adapters carry a task summary (the prefilter's texts embedding)"))
    default_strategy: tuple[str, ...] = field(default=DEFAULT_STRATEGY, metadata=_help(
        "the loop's strategies when none are chosen (AdaptConfig.for_kind)"))
    fallback_target_modules: tuple[tuple[str, ...], ...] = field(default=(), metadata=_help(
        "LoRA-style target modules when peft's table has no entry for the model type (ViT, an "
        "EncoderDecoderModel of BERTs): the first of these name sets that the model has all of "
        "(the attention query and value projections, as transformers versions name them)"))
    description: str = ""
    pipeline_tag: str = field(default="text-classification",
                              metadata=_help("the Hub's pipeline tag of its exported adapters"))


TASK_KINDS: dict[str, TaskKindSpec] = {
    spec.name: spec
    for spec in (
        TaskKindSpec("single", "AutoModelForSequenceClassification", "SEQ_CLS", "tokenizer",
                     True, CLASSIFICATION_METRICS, DEFAULT_METRIC, "classification", True,
                     description="one text -> a class label"),
        TaskKindSpec("pair", "AutoModelForSequenceClassification", "SEQ_CLS", "tokenizer",
                     True, CLASSIFICATION_METRICS, DEFAULT_METRIC, "classification", True,
                     description="a pair of texts -> a class label"),
        TaskKindSpec("text2text", "AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM", "tokenizer",
                     False, GENERATION_METRICS, "target-loglik", "text2text", False,
                     ("plain",), ATTENTION_QV,
                     description="input text -> target text (encoder-decoder: T5, BART)",
                     pipeline_tag="text2text-generation"),
        TaskKindSpec("image", "AutoModelForImageClassification", None, "image_processor",
                     True, CLASSIFICATION_METRICS, DEFAULT_METRIC, "image", False,
                     DEFAULT_STRATEGY, ATTENTION_QV,
                     description="an image -> a class label (ViT and friends)",
                     pipeline_tag="image-classification"),
    )
}
KIND_NAMES = tuple(TASK_KINDS)
# The peft task types of adapters adapterpool trains (image adapters carry none).
PEFT_TASK_TYPES = tuple(sorted({s.peft_task_type for s in TASK_KINDS.values() if s.peft_task_type}))
# Kinds whose examples carry class labels: every label-reading metric applies to them.
LABELLED_KINDS = tuple(name for name, spec in TASK_KINDS.items() if spec.labelled)
# Every threshold metric of every kind, in the table's order (the command line's choices).
THRESHOLD_METRICS = tuple(
    dict.fromkeys(m for s in TASK_KINDS.values() for m in s.threshold_metrics))


def get_kind(name: str) -> TaskKindSpec:
    """The spec of task kind ``name``; an unknown name is a :class:`TaskDataError` naming the
    kinds (it comes from data: meta.json's ``task_type`` or an adapter's metadata)."""
    if name in TASK_KINDS:
        return TASK_KINDS[name]
    raise TaskDataError(
        f"task kind {name!r} unknown{did_you_mean(str(name), TASK_KINDS)}; "
        f"choose from {', '.join(TASK_KINDS)}"
    )


def check_threshold_metric(kind: str, metric: str) -> None:
    """Refuse a threshold (or selection) metric that the kind's evaluation does not produce."""
    spec = get_kind(kind)
    if metric not in spec.threshold_metrics:
        raise UsageError(
            f"threshold metric {metric!r} does not apply to {kind} tasks; use one of "
            f"{', '.join(spec.threshold_metrics)} (--threshold-metric)"
        )


def same_family(kind: str, other: str) -> bool:
    """Whether an adapter trained on a task of kind ``other`` may warm-start a ``kind`` target;
    an unknown kind (an entry written by a newer version) never may."""
    if kind not in TASK_KINDS or other not in TASK_KINDS:
        return False
    return TASK_KINDS[kind].family == TASK_KINDS[other].family
