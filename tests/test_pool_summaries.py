"""Task summaries in the pool: written at contribution, verified like weights, added, exported,
imported, removed, repaired and reindexed without ever leaving a half-written entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from adapterpool.errors import TaskSummaryError
from adapterpool.peft_files import TASK_EMBEDDING
from adapterpool.pool import AdapterPool, PoolError
from adapterpool.pool.catalog import task_summaries_table
from adapterpool.pool.maintenance import export, import_adapter, verify
from adapterpool.pool.task_summaries import attach_summary, sha256_bytes, summary_rows
from adapterpool.ranking.reindex import reindex
from adapterpool.ranking.task_summary import TaskSummary


def _state(pool: AdapterPool) -> tuple:
    files = sorted(str(p.relative_to(pool.path)) for p in (pool.path / "adapters").rglob("*"))
    staging = list((pool.path / ".staging").glob("*")) if (pool.path / ".staging").exists() else []
    return [r.as_json() for r in pool.list()], summary_rows(pool), files, staging


def _without_summary(pool: AdapterPool, tmp_path: Path, adapter_id: str) -> Path:
    """An adapter folder as an older adapterpool (or PEFT alone) writes it: no summary."""
    folder = tmp_path / f"plain-{adapter_id}"
    shutil.copytree(pool.adapter_dir(adapter_id), folder)
    (folder / TASK_EMBEDDING).unlink()
    return folder


def test_contributed_adapters_carry_a_recorded_texts_summary(tiny_pool: AdapterPool):
    rows = summary_rows(tiny_pool)
    assert set(rows) == {r.id for r in tiny_pool.list()}
    for adapter_id, row in rows.items():
        data = (tiny_pool.adapter_dir(adapter_id) / TASK_EMBEDDING).read_bytes()
        assert sha256_bytes(data) == row["sha256"] and len(data) < 1024
        summary = TaskSummary.from_bytes(data, dims=32)
        assert (row["source"], row["dims"], summary.source) == ("texts", 32, "texts")
        assert row["n_texts"] == summary.n_texts == 64  # every text of the 64-example sources
    reading = tiny_pool.task_summaries([r.id for r in tiny_pool.list()])
    assert set(reading.summaries) == set(rows) and not reading.missing and not reading.problems
    report = verify(tiny_pool)
    assert report["consistent"] and report["task_summaries"] == 3
    assert not report["task_summaries_corrupt"]


def test_adapter_without_summary_is_added_and_reindex_gives_it_a_probe_summary(
    pool_copy: AdapterPool, tmp_path: Path
):
    first = pool_copy.list()[0]
    folder = _without_summary(pool_copy, tmp_path, first.id)
    pool_copy.remove(first.id)
    assert first.id not in summary_rows(pool_copy)  # removed with its adapter
    record = pool_copy.add(folder)
    assert record.id == first.id
    assert not (pool_copy.adapter_dir(record.id) / TASK_EMBEDDING).exists()
    assert pool_copy.task_summaries([record.id]).missing == [record.id]
    assert verify(pool_copy)["consistent"]
    report = reindex(pool_copy, show_progress=False)
    assert report.computed == [record.id] and report.already == 2 and not report.failed
    row = summary_rows(pool_copy)[record.id]
    assert row["source"] == "probe" and row["n_texts"] == 132
    summary = pool_copy.task_summaries([record.id]).summaries[record.id]
    assert summary.source == "probe" and np.isfinite(summary.mean).all()
    again = reindex(pool_copy, show_progress=False)
    assert again.computed == [] and again.already == 3
    assert verify(pool_copy)["consistent"]


def test_bad_summary_in_an_added_folder_is_refused_and_changes_nothing(
    pool_copy: AdapterPool, tmp_path: Path
):
    first = pool_copy.list()[0]
    folder = _without_summary(pool_copy, tmp_path, first.id)
    pool_copy.remove(first.id)
    wide = TaskSummary(np.zeros(48, np.float32), np.zeros(48, np.float32), 4, "texts", 0, 8)
    (folder / TASK_EMBEDDING).write_bytes(wide.to_bytes())  # another model's width
    before = _state(pool_copy)
    with pytest.raises(TaskSummaryError, match="48 dims"):
        pool_copy.add(folder)
    assert _state(pool_copy) == before


def test_altered_summary_is_found_not_used_and_repair_lets_reindex_redo_it(
    pool_copy: AdapterPool,
):
    victim = pool_copy.list()[1].id
    path = pool_copy.adapter_dir(victim) / TASK_EMBEDDING
    other = TaskSummary(np.ones(32, np.float32), np.ones(32, np.float32), 5, "texts", 0, 8)
    path.write_bytes(other.to_bytes())  # valid file, but not the recorded one
    reading = pool_copy.task_summaries([r.id for r in pool_copy.list()])
    assert victim not in reading.summaries and "altered" in reading.problems[victim]
    report = verify(pool_copy)
    assert report["task_summaries_corrupt"] == [victim] and not report["consistent"]
    assert report["verified"] == 3  # the adapter itself is fine
    repaired = verify(pool_copy, repair=True)
    assert repaired["consistent"] and not path.exists() and victim not in summary_rows(pool_copy)
    assert reindex(pool_copy, show_progress=False).computed == [victim]
    assert verify(pool_copy)["consistent"]


def test_unrecorded_summary_file_is_a_leftover_that_repair_removes(pool_copy: AdapterPool):
    victim = pool_copy.list()[2].id
    path = pool_copy.adapter_dir(victim) / TASK_EMBEDDING
    with pool_copy.engine.begin() as conn:  # as a crash after the rename, before the commit
        conn.execute(task_summaries_table.delete().where(
            task_summaries_table.c.adapter_id == victim))
    report = verify(pool_copy)
    assert report["task_summaries_unrecorded"] == [victim] and report["consistent"]
    verify(pool_copy, repair=True)
    assert not path.exists() and verify(pool_copy)["task_summaries_unrecorded"] == []


def test_attach_is_all_or_nothing(pool_copy: AdapterPool, monkeypatch: pytest.MonkeyPatch):
    victim = pool_copy.list()[0].id
    with pool_copy.engine.begin() as conn:
        conn.execute(task_summaries_table.delete().where(
            task_summaries_table.c.adapter_id == victim))
    (pool_copy.adapter_dir(victim) / TASK_EMBEDDING).unlink()
    summary = TaskSummary(np.ones(32, np.float32), np.zeros(32, np.float32), 5, "probe", 0, 8)
    before = _state(pool_copy)
    real = pool_copy.storage.publish_file

    def publish_then_fail(staged, adapter_id, name):
        real(staged, adapter_id, name)  # the file is in place ...
        raise OSError("disk gone")  # ... and the transaction fails

    monkeypatch.setattr(pool_copy.storage, "publish_file", publish_then_fail)
    with pytest.raises(OSError, match="disk gone"):
        attach_summary(pool_copy, victim, summary)
    assert _state(pool_copy) == before  # no row, no file, no staging
    monkeypatch.setattr(pool_copy.storage, "publish_file", real)
    attach_summary(pool_copy, victim, summary)
    assert pool_copy.task_summaries([victim]).summaries[victim].source == "probe"
    with pytest.raises(PoolError, match="already has"):
        attach_summary(pool_copy, victim, summary)
    with pytest.raises(PoolError, match="no adapter"):
        attach_summary(pool_copy, "not-here", summary)
    assert verify(pool_copy)["consistent"]


def test_export_then_import_keeps_the_summary(pool_copy: AdapterPool, tmp_path: Path):
    record = pool_copy.list()[0]
    recorded = summary_rows(pool_copy)[record.id]["sha256"]
    out = export(pool_copy, record.id, tmp_path / "export")
    assert sha256_bytes((out / TASK_EMBEDDING).read_bytes()) == recorded
    pool_copy.remove(record.id)
    again = import_adapter(pool_copy, str(out))
    assert summary_rows(pool_copy)[again.id]["sha256"] == recorded
    with pool_copy.engine.connect() as conn:
        assert len(conn.execute(select(task_summaries_table)).all()) == 3
    assert verify(pool_copy)["consistent"]


def test_pool_reindex_and_verify_on_the_command_line(pool_copy: AdapterPool, capsys):
    from adapterpool.cli.main import main

    victim = pool_copy.list()[0].id
    (pool_copy.adapter_dir(victim) / TASK_EMBEDDING).write_bytes(b"broken")
    assert main(["pool", "verify", str(pool_copy.path)]) == 2  # inconsistent: says so
    assert "corrupt: ['" + victim in capsys.readouterr().out
    assert main(["pool", "verify", str(pool_copy.path), "--repair", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["task_summaries_corrupt"] == [victim]
    assert main(["pool", "reindex", str(pool_copy.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["computed"] == [victim] and report["already"] == 2 and not report["failed"]
    assert main(["pool", "reindex", str(pool_copy.path)]) == 0
    assert "0 task summaries computed, 3 adapters had one" in capsys.readouterr().out


def test_dangling_rows_are_leftovers_that_block_nothing(pool_copy: AdapterPool, tmp_path: Path):
    from adapterpool.pool.catalog import adapters_table

    first = pool_copy.list()[0]
    folder = _without_summary(pool_copy, tmp_path, first.id)
    # as a remove by an adapterpool without summaries: adapter row and files go, its summary
    # row stays
    with pool_copy.engine.begin() as conn:
        conn.execute(adapters_table.delete().where(adapters_table.c.id == first.id))
    pool_copy.storage.delete(first.id)
    report = verify(pool_copy)
    assert report["task_summaries_dangling"] == [first.id] and report["consistent"]
    record = pool_copy.add(folder)  # the same id again: the leftover row goes, no "duplicate"
    assert record.id == first.id and first.id not in summary_rows(pool_copy)
    with pool_copy.engine.begin() as conn:
        conn.execute(task_summaries_table.insert().values(
            adapter_id="gone-adapter", sha256="0" * 64, source="texts", n_texts=1, dims=32,
            created_at="2026-01-01"))
    assert verify(pool_copy)["task_summaries_dangling"] == ["gone-adapter"]
    verify(pool_copy, repair=True)
    assert "gone-adapter" not in summary_rows(pool_copy)
