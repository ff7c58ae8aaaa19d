"""Concurrent writers and kill -9 at random instants never lose or corrupt an entry."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adapterpool.pool import AdapterPool
from adapterpool.pool.maintenance import export, import_adapter, verify

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def pool_and_source(tiny_pool, tmp_path):
    shutil.copytree(tiny_pool.path, tmp_path / "pool")
    pool = AdapterPool(tmp_path / "pool")
    source = tmp_path / "source"
    shutil.copytree(pool.adapter_dir(pool.list()[0].id), source)
    return pool, source


def start_writer(pool: AdapterPool, source: Path, worker: int, count: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen(
        [sys.executable, "-m", "adapterpool.pool.stress", str(pool.path), str(source),
         str(worker), str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def test_four_concurrent_writers_lose_nothing(pool_and_source):
    pool, source = pool_and_source
    before = len(pool.list())
    workers = [start_writer(pool, source, w, 10) for w in range(4)]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    added = [line.split()[1] for out, _ in outputs for line in out.splitlines()
             if line.startswith("added")]
    assert len(added) == 40 == len(set(added))
    assert {r.id for r in pool.list()} >= set(added)
    assert len(pool.list()) == before + 40
    report = verify(pool)
    assert report["consistent"] and report["verified"] == before + 40 and not report["orphans"]


def test_repair_beside_running_imports_deletes_nothing_catalogued(pool_and_source):
    """The data-loss defect: repair used to treat adapters committed while it hashed as orphans."""
    pool, source = pool_and_source
    workers = [start_writer(pool, source, w, 12) for w in range(3)]
    repairs = 0
    while any(w.poll() is None for w in workers) or repairs < 3:
        report = verify(pool, repair=True)
        assert report["consistent"], report
        repairs += 1
    outputs = [w.communicate(timeout=240) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    added = [line.split()[1] for out, _ in outputs for line in out.splitlines()
             if line.startswith("added")]
    assert len(added) == 36 and repairs > 3
    listed = {r.id for r in pool.list()}
    assert set(added) <= listed
    for adapter_id in added:  # whole on disk, hash as catalogued
        assert pool.storage.weights_sha(adapter_id) == pool.get(adapter_id).sha256
    final = verify(pool)
    assert final["consistent"] and final["verified"] == len(listed) and not final["orphans"]


def test_repair_leaves_young_staging_and_orphans_alone(pool_and_source):
    pool, _ = pool_and_source
    staging = pool.path / ".staging" / "import-in-progress"
    staging.mkdir(parents=True)
    (staging / "adapter_config.json").write_text("{}")
    orphan = pool.path / "adapters" / "orphan-0000000001"
    orphan.mkdir()
    report = verify(pool, repair=True)  # default grace: both are young, both stay
    assert sorted(report["recent"]) == [".staging/import-in-progress", "orphan-0000000001"]
    assert report["orphans"] == [] and report["leftovers"] == []
    assert staging.is_dir() and orphan.is_dir()
    old = time.time() - 3600
    for path in (staging, orphan):
        os.utime(path, (old, old))
    report = verify(pool, repair=True)
    assert report["orphans"] == ["orphan-0000000001"] and report["recent"] == []
    assert report["leftovers"] == [".staging/import-in-progress"]
    assert not staging.exists() and not orphan.exists()


def test_repair_waits_for_the_catalog_lock(pool_and_source):
    """An add that has inserted its row holds the lock: repair cannot run between publish and
    commit, where the folder exists but its row is not yet visible."""
    import threading

    from adapterpool.pool.catalog import catalog_write_lock

    pool, _ = pool_and_source
    orphan = pool.path / "adapters" / "orphan-0000000002"
    orphan.mkdir()
    finished = threading.Event()
    with catalog_write_lock(pool.engine):
        thread = threading.Thread(
            target=lambda: (verify(pool, repair=True, grace_seconds=0), finished.set()))
        thread.start()
        time.sleep(1.0)
        assert not finished.is_set() and orphan.is_dir()  # blocked behind the writer
    thread.join(timeout=60)
    assert finished.is_set() and not orphan.exists()


def test_kill_9_during_adds_leaves_a_consistent_pool(pool_and_source):
    pool, source = pool_and_source
    before = len(pool.list())
    rng = np.random.default_rng(0)
    completed, cycle = 0, 0
    # At least 8 kills, and more (up to 24) until one has landed inside an add.
    while cycle < 8 or (cycle < 24 and not any((pool.path / ".staging").glob("*"))):
        worker = start_writer(pool, source, cycle + 10, -1)
        assert worker.stdout.readline().strip() == "ready"  # warm: adds start at once
        time.sleep(float(rng.uniform(0.3, 1.5)))
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        completed += sum(line.startswith("added") for line in worker.stdout.read().splitlines())
        cycle += 1
    report = verify(pool)
    assert report["consistent"], report
    assert report["verified"] == len(pool.list()) >= before + completed
    assert completed > 0  # the kills landed among adds, not before the first one
    repaired = verify(pool, repair=True, grace_seconds=0)  # the writers are dead
    assert repaired["consistent"]
    assert repaired["leftovers"] or repaired["orphans"]  # some kills landed inside an add
    clean = verify(pool)
    assert clean["orphans"] == [] and clean["leftovers"] == [] and clean["recent"] == []
    for record in pool.list():  # every catalogued adapter is whole and loadable
        assert (pool.adapter_dir(record.id) / "adapter_config.json").is_file()


def test_verify_reports_tampering_and_repair_keeps_catalogued_files(pool_and_source):
    pool, _ = pool_and_source
    victim = pool.list()[0]
    weights = pool.path / "adapters" / victim.id / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    (pool.path / "adapters" / "orphan-0000000000").mkdir()
    report = verify(pool, repair=True, grace_seconds=0)
    assert report["corrupt"] == [victim.id] and report["orphans"] == ["orphan-0000000000"]
    assert not report["consistent"]
    assert weights.exists() and not (pool.path / "adapters" / "orphan-0000000000").exists()


def test_export_loads_with_peft_and_imports_back(pool_and_source, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    pool, _ = pool_and_source
    record = pool.list()[0]
    out = export(pool, record.id, tmp_path / "exported")
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and record.task_name in card and record.sha256 in card
    base = AutoModelForSequenceClassification.from_pretrained(
        pool.base_model, num_labels=len(record.label_names))
    PeftModel.from_pretrained(base, str(out))
    (out / "adapterpool.json").unlink()
    other = AdapterPool.init(tmp_path / "other", base_model=pool.base_model)
    imported = import_adapter(other, str(out), task_name="imported-task", kind=record.task_kind,
                              label_names=record.label_names)
    assert imported.sha256 == record.sha256 and imported.task_name == "imported-task"


def test_unreachable_hub_import_fails_clearly(pool_and_source, monkeypatch):
    from adapterpool.pool import PoolError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pool, _ = pool_and_source
    with pytest.raises(PoolError, match="cannot download hf://someone/adapter"):
        import_adapter(pool, "hf://someone/adapter")


def test_adapter_files_on_an_fsspec_store(tiny_pool, tmp_path):
    """Same pool semantics with the files behind an fsspec URL (memory:// here, s3:// for users)."""
    url = f"memory://adapterpool-test-{tmp_path.name}"
    pool = AdapterPool.init(tmp_path / "pool", base_model=tiny_pool.base_model, storage_url=url)
    source = tmp_path / "source"
    shutil.copytree(tiny_pool.adapter_dir(tiny_pool.list()[0].id), source)
    record = pool.add(source)
    assert not (tmp_path / "pool" / "adapters" / record.id).exists()
    assert pool.storage.ids() == [record.id]
    folder = pool.adapter_dir(record.id)  # downloaded into the cache, verified by sha256
    assert folder.name == record.sha256
    assert verify(pool)["consistent"]
    pool.storage.fs.pipe(f"{pool.storage.root}/orphan-0000000000/x", b"1")
    report = verify(pool, repair=True, grace_seconds=0)
    assert report["orphans"] == ["orphan-0000000000"] and pool.storage.ids() == [record.id]
    pool.remove(record.id)
    assert pool.storage.ids() == [] and pool.list() == []
