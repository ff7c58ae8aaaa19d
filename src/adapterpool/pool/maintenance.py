"""Keeping a pool honest and interoperable: verify/repair, export with a model card, import."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from sqlalchemy import select

from ..errors import UsageError
from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META, TASK_EMBEDDING
from .catalog import adapters_table, catalog_write_lock
from .checks import AdapterRejected
from .storage import mtime
from .store import AdapterPool, PoolError
from .task_summaries import summary_rows, verified_summary_bytes, verify_summaries

DEFAULT_GRACE_SECONDS = 600.0
# Rewritten by every verify: a pool server drops its cache of verified file hashes when it changes
# (adapterpool.server.files), so a file altered without a new mtime is hashed again.
VERIFY_MARKER = ".verify-generation"


def mark_verified(pool: AdapterPool) -> None:
    tmp = pool.path / f"{VERIFY_MARKER}.{os.getpid()}.tmp"
    tmp.write_text(f"{time.time_ns()}\n")
    os.replace(tmp, pool.path / VERIFY_MARKER)


def verify(
    pool: AdapterPool, *, repair: bool = False, grace_seconds: float = DEFAULT_GRACE_SECONDS
) -> dict:
    """Recompute every hash; find orphan folders and leftovers of interrupted adds/removes.

    ``repair`` deletes orphans and leftovers, never a catalogued adapter's files, and is safe
    beside running writers: orphans are decided and deleted under the catalog's write lock (no add
    is half-published then, none commits meanwhile); staging folders and orphans younger than
    ``grace_seconds`` are left alone and reported as ``recent`` (an import stages its files before
    it takes the lock); a missing or corrupt finding is checked again against the catalog as it is
    afterwards, so an adapter removed meanwhile is not reported missing.
    """
    if grace_seconds < 0:
        raise UsageError(f"grace period must be >= 0 seconds, got {grace_seconds}")
    records = {r.id: r for r in pool.list()}
    corrupt, missing = [], []
    for adapter_id, record in records.items():
        sha = pool.storage.weights_sha(adapter_id)
        if sha is None:
            missing.append(adapter_id)
        elif sha != record.sha256:
            corrupt.append(adapter_id)
    if corrupt or missing:  # confirm against the catalog as it is now
        current = {r.id: r.sha256 for r in pool.list()}
        gone = {i for i in corrupt + missing if current.get(i) != records[i].sha256}
        corrupt = [i for i in corrupt if i not in gone]
        missing = [i for i in missing if i not in gone and pool.storage.weights_sha(i) is None]
        records = {i: r for i, r in records.items() if i not in gone}
    now = time.time()

    def young(modified: float | None) -> bool:
        return modified is not None and now - modified < grace_seconds

    orphans, recent = [], []
    with catalog_write_lock(pool.engine) as conn:
        catalogued = set(conn.execute(select(adapters_table.c.id)).scalars())
        for name in pool.storage.ids():
            if name not in catalogued:
                (recent if young(pool.storage.modified(name)) else orphans).append(name)
        leftovers = []
        for folder in (".staging", ".trash"):
            paths = sorted((pool.path / folder).iterdir()) if (pool.path / folder).is_dir() else []
            for path in paths:
                rel = str(path.relative_to(pool.path))
                if folder == ".staging" and young(mtime(path)):
                    recent.append(rel)
                else:
                    leftovers.append(rel)
        leftovers += pool.storage.leftovers()  # remote staging exists only inside an add's lock
        if repair:
            for name in orphans:
                pool.storage.delete(name)
            for rel in leftovers:
                if "://" in rel:
                    pool.storage.fs.rm(rel, recursive=True)
                else:
                    shutil.rmtree(pool.path / rel, ignore_errors=True)
        # last under the lock: its repair commits, which ends the lock
        summaries = verify_summaries(pool, conn, catalogued, repair=repair)
    mark_verified(pool)
    return {
        "adapters": len(records),
        "verified": len(records) - len(corrupt) - len(missing),
        "corrupt": corrupt,
        "missing_files": missing,
        "orphans": orphans,
        "leftovers": leftovers,
        "recent": recent,
        "grace_seconds": grace_seconds,
        "repaired": repair,
        **summaries,
        # a broken summary is derived data: repair drops it (pool reindex computes it again);
        # dangling rows and unrecorded files are leftovers, never read
        "consistent": not (corrupt or missing) and (
            repair or not summaries["task_summaries_corrupt"]),
    }


def model_card(record, config: dict) -> str:
    """A Hugging Face model card (README.md) carrying the pool's metadata."""
    from ..task_kinds import TASK_KINDS

    validation = (record.metrics or {}).get("validation") or {}
    kind = TASK_KINDS.get(record.task_kind, TASK_KINDS["single"])
    task = (f"{record.task_kind}-text classification task **{record.task_name}** (labels: "
            f"{', '.join(record.label_names)})" if kind.family == "classification" else
            f"{record.task_kind} task **{record.task_name}** ({kind.description}"
            + (f"; labels: {', '.join(record.label_names)})" if kind.labelled else ")"))
    first, second = kind.threshold_metrics[:2]
    head = f", num_labels={len(record.label_names)}" if kind.labelled else ""
    front = [
        "---",
        "library_name: peft",
        f"base_model: {record.base_model}",
        f"pipeline_tag: {kind.pipeline_tag}",
        "tags: [adapterpool, peft, " + record.peft_type.lower() + "]",
        "---",
    ]
    body = [
        f"# {record.id}",
        "",
        f"A {record.peft_type} adapter for `{record.base_model}`, trained on the {task}, "
        "exported from an adapterpool pool.",
        "",
        "| field | value |",
        "|---|---|",
        f"| parent adapter | {record.parent_id or '-'} |",
        f"| examples (train / validation / test) | {record.n_train} / {record.n_validation} / "
        f"{record.n_test} |",
        f"| validation {first} | {validation.get(first, '-')} |",
        f"| validation {second} | {validation.get(second, '-')} |",
        f"| training seconds | {record.train_seconds} |",
        f"| energy (kWh) | {record.energy_kwh} |",
        f"| created | {record.created_at} |",
        f"| sha256 (weights) | `{record.sha256}` |",
        "",
        "```python",
        "from peft import PeftModel",
        f"from transformers import {kind.auto_class}",
        f"base = {kind.auto_class}.from_pretrained(\"{record.base_model}\"{head})",
        "model = PeftModel.from_pretrained(base, \"THIS_FOLDER\")",
        "```",
        "",
        f"LoRA settings: r={config.get('r')}, alpha={config.get('lora_alpha')}, "
        f"target modules {config.get('target_modules')}.",
    ]
    return "\n".join(front + body) + "\n"


def export(pool: AdapterPool, adapter_id: str, out_dir: str | Path) -> Path:
    """A folder that ``PeftModel.from_pretrained`` loads directly, with a model card; from a
    pool folder or a served pool (the same files)."""
    record = pool.get(adapter_id)
    source = pool.adapter_dir(adapter_id)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise PoolError(f"export folder {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    # the task summary travels too, verified; an import elsewhere keeps it
    if isinstance(pool, AdapterPool):
        row = summary_rows(pool).get(adapter_id)
        summary = None if row is None else verified_summary_bytes(pool, adapter_id, row)
    else:  # a served pool (RemotePool): the server's summary, sha256 checked
        summary = pool.summary_bytes(adapter_id)
    if summary is not None:
        (out / TASK_EMBEDDING).write_bytes(summary)
    config = json.loads((source / ADAPTER_CONFIG).read_text())
    (out / "README.md").write_text(model_card(record, config))
    return out


def fetch_source(spec: str) -> Path:
    """A local folder for ``spec``: itself, or a Hub snapshot for ``hf://user/repo``.

    Only JSON, safetensors and Markdown files are downloaded; pickles never reach the disk.
    """
    if not spec.startswith("hf://"):
        path = Path(spec)
        if not path.is_dir():
            raise AdapterRejected(f"adapter folder {spec!r} does not exist")
        return path
    repo = spec[len("hf://"):]
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.md"]))
    except Exception as exc:
        raise PoolError(
            f"cannot download {spec} from the Hugging Face Hub ({type(exc).__name__}: {exc}); "
            "download the adapter folder elsewhere and import the local folder"
        ) from exc


def import_adapter(pool: AdapterPool, spec: str, *, task_name: str | None = None,
                   kind: str | None = None, label_names: list[str] | None = None,
                   parent_id: str | None = None):
    """Add a PEFT folder (or Hub repo); metadata from its adapterpool.json or the arguments."""
    source = fetch_source(spec)
    meta_path = source / ADAPTERPOOL_META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    task = dict(meta.get("task") or {})
    if task_name:
        task["name"] = task_name
    if kind:
        task["kind"] = kind
    if label_names:
        task["label_names"] = label_names
    meta["task"] = task
    return pool.add(source, meta=meta, parent_id=parent_id)
