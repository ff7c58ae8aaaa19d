"""Pool throughput: adds per second with 4 concurrent writer processes on SQLite and (when
ADAPTERPOOL_TEST_POSTGRES_URL is set) PostgreSQL; upload and download MB/s of the pool server;
and crash safety: a writer killed with SIGKILL at random instants, then `verify` on the pool.

    .venv/bin/python benchmarks/bench_pool.py [--adds 10] [--kills 50] [--max-wait 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text

from adapterpool.contributing import contribute
from adapterpool.pool import AdapterPool
from adapterpool.pool.maintenance import verify
from adapterpool.pool.remote import RemotePool
from adapterpool.pool.tokens import create_token
from adapterpool.tasks import load_task
from adapterpool.training.standard import train_standard
from adapterpool.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _writer(pool: AdapterPool, source: Path, worker: int, count: int) -> subprocess.Popen:
    """A process adding ``count`` perturbed copies of ``source`` (-1: until killed)."""
    return subprocess.Popen([sys.executable, "-m", "adapterpool.pool.stress", str(pool.path),
                             str(source), str(worker), str(count)],
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))


def writers(pool: AdapterPool, source: Path, count: int, processes: int = 4) -> float:
    procs = [_writer(pool, source, w, count) for w in range(processes)]
    for proc in procs:  # wait until every writer has imported everything
        assert proc.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    for proc in procs:
        proc.communicate()
    return processes * count / (time.perf_counter() - start)


def crashes(pool: AdapterPool, source: Path, kills: int, seed: int, max_wait: float) -> dict:
    """Kill a writer with SIGKILL ``kills`` times, each after a seeded random 0.05-``max_wait`` s
    of adds (the first add of a process takes about 2 s: loading the base model's fingerprint);
    then ``verify``: every catalogued adapter must be whole, with its recorded sha256."""
    rng = np.random.default_rng(seed)
    completed = 0
    for cycle in range(kills):
        proc = _writer(pool, source, cycle + 1, -1)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, max_wait)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        completed += sum(line.startswith("added") for line in out.splitlines())
    report = verify(pool)
    repaired = verify(pool, repair=True)
    return {"kills": kills, "adds_reported": completed, "catalogued": len(pool.list()),
            "verified": report["verified"], "consistent": report["consistent"],
            "orphans": len(report["orphans"]), "leftovers": len(report["leftovers"]),
            "consistent_after_repair": repaired["consistent"] and verify(pool)["consistent"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adds", type=int, default=10, help="adds per writer")
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs during adds (0: skip)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill instants")
    parser.add_argument("--max-wait", type=float, default=6.0,
                        help="longest time a writer runs before its kill (s)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        seed_pool = AdapterPool.init(tmp / "seed")
        task = load_task("builtin:debate-role", max_train=32, max_eval=16)
        result = train_standard(task, seed_pool.base_model, TrainConfig(epochs=1, max_length=32),
                                show_progress=False, measure_energy=False)
        source = seed_pool.adapter_dir(contribute(seed_pool, task, result).id)
        size_mb = (source / "adapter_model.safetensors").stat().st_size / 2**20
        print(f"adapter: {size_mb:.2f} MiB of weights (MiniLM, LoRA r=16 + head)")
        rate = writers(AdapterPool.init(tmp / "sqlite"), source, args.adds)
        print(f"SQLite catalog, 4 writers:     {rate:6.2f} adds/s")
        url = os.environ.get("ADAPTERPOOL_TEST_POSTGRES_URL")
        if url:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            pg = AdapterPool.init(tmp / "pg", catalog_url=url.rsplit("/", 1)[0] + "/" + name)
            rate = writers(pg, source, args.adds)
            print(f"PostgreSQL catalog, 4 writers: {rate:6.2f} adds/s")
            pg.engine.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        else:
            print("PostgreSQL: skipped (set ADAPTERPOOL_TEST_POSTGRES_URL)")
        if args.kills:
            c = crashes(AdapterPool.init(tmp / "crash"), source, args.kills, args.seed,
                        args.max_wait)
            print(f"kill -9 during adds: {c['kills']} kills (seed {args.seed}, within "
                  f"{args.max_wait:g} s), "
                  f"{c['adds_reported']} adds reported done, {c['catalogued']} catalogued, "
                  f"{c['verified']} verified, consistent={c['consistent']}, "
                  f"{c['orphans']} orphans + {c['leftovers']} staging leftovers "
                  f"(repair -> consistent={c['consistent_after_repair']})")
        served = AdapterPool.init(tmp / "served")
        token = create_token(served, "bench")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "adapterpool.cli", "serve",
                                   str(served.path), "--port", str(port)],
                                  env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    httpx.get(base + "/api/info", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            remote = RemotePool(base, token=token, cache_dir=tmp / "cache")
            from safetensors.torch import load_file, save_file

            state = load_file(source / "adapter_model.safetensors")
            key = next(k for k in sorted(state) if "lora_B" in k)
            ids, start = [], time.perf_counter()
            for i in range(args.adds):
                folder = tmp / f"up{i}"
                shutil.copytree(source, folder)
                save_file(dict(state) | {key: state[key] + (i + 1) * 1e-4},
                          folder / "adapter_model.safetensors")
                ids.append(remote.add(folder).id)
            up = args.adds * size_mb / (time.perf_counter() - start)
            start = time.perf_counter()
            for adapter_id in ids:
                remote.adapter_dir(adapter_id)
            down = args.adds * size_mb / (time.perf_counter() - start)
            print(f"server upload (checked add):   {up:6.2f} MiB/s ({args.adds} adapters)")
            print(f"server download (verified):    {down:6.2f} MiB/s")
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
