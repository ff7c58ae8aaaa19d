"""``pool reindex``: task summaries for the adapters that have none (contributed before summaries
existed, imported without one, or dropped by ``verify --repair``).

Their training texts are not known, so each gets a *probe* summary
(:func:`adapterpool.ranking.summarize.probe_summary`): the packaged probe set embedded with the base
model, each text weighted by how far the adapter moves its embedding. The base pass over the
probe set is done once; each adapter then costs one forward pass over the 132 probe texts, merged
into one shared base as in scoring. Each summary is attached atomically on its own, so an
interrupted reindex keeps what it finished and the next one does the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ..errors import PoolError, describe_error
from ..models.build import load_tokenizer, pick_device
from ..pool import AdapterPool, AdapterRecord, Pool
from ..pool.task_summaries import attach_summary, summary_rows
from ..task_kinds import TASK_KINDS
from .shared_base import CandidateModels
from .summarize import DEFAULT_SUMMARY_LENGTH, encode, load_encoder, probe_records, probe_summary
from .task_summary import TaskSummary

logger = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    adapters: int
    already: int  # had a summary before
    computed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # adapter id -> why
    seconds: float = 0.0
    not_applicable: int = 0  # adapters of task kinds without summaries (text2text, image)

    def as_json(self) -> dict:
        return {"adapters": self.adapters, "already": self.already, "computed": self.computed,
                "failed": self.failed, "seconds": self.seconds,
                "not_applicable": self.not_applicable}


def probe_summaries(
    pool: Pool, records: list[AdapterRecord], *, max_length: int = DEFAULT_SUMMARY_LENGTH,
    show_progress: bool = True,
) -> Iterator[tuple[AdapterRecord, TaskSummary | None, str | None]]:
    """``(record, summary, None)`` for each adapter, or ``(record, None, why)`` when it cannot be
    loaded or run. The base model's pass over the probe set is done once, before the first."""
    tokenizer = load_tokenizer(pool.base_model)
    probe = probe_records()
    base = encode(load_encoder(pool.base_model), probe, tokenizer, max_length=max_length)
    models = CandidateModels(pool.base_model, pick_device(), reuse_base=True)
    for record in tqdm(records, desc="probe summaries", disable=not show_progress, leave=False):
        try:
            model, release = models.open(record, pool.adapter_dir(record.id))
            try:
                moved = encode(model, probe, tokenizer, max_length=max_length)
            finally:
                release()
        except Exception as exc:  # one adapter's failure must not end the others
            yield record, None, describe_error(exc)
            continue
        yield record, probe_summary(base, moved, max_length=max_length), None


def reindex(
    pool: AdapterPool, *, max_length: int = DEFAULT_SUMMARY_LENGTH, show_progress: bool = True,
) -> ReindexReport:
    """Compute and attach a probe summary for every adapter of ``pool`` without a summary
    (text classifiers: the probe texts mean nothing to text2text or image adapters).

    An adapter that cannot be loaded or run is reported in ``failed`` (and logged) and the others
    go on; one that got a summary meanwhile (another reindex) is left as it is.
    """
    start = time.perf_counter()
    records = pool.list()
    have = summary_rows(pool)
    summarised = {r.id for r in records
                  if r.task_kind in TASK_KINDS and TASK_KINDS[r.task_kind].task_summary}
    todo = [r for r in records if r.id not in have and r.id in summarised]
    report = ReindexReport(adapters=len(records), already=sum(r.id in have for r in records),
                           not_applicable=len(records) - len(summarised))
    if todo:
        for record, summary, why in probe_summaries(pool, todo, max_length=max_length,
                                                    show_progress=show_progress):
            if summary is not None:
                try:
                    attach_summary(pool, record.id, summary)
                    report.computed.append(record.id)
                    continue
                except PoolError as exc:
                    if "already has a task summary" in str(exc):
                        continue  # another reindex did it meanwhile
                    why = describe_error(exc)
            report.failed[record.id] = why or "unknown"
            logger.warning("adapter %s: no task summary: %s", record.id, why)
    report.seconds = time.perf_counter() - start
    return report
