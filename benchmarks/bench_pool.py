"""Pool throughput: adds per second with 4 concurrent writer processes on SQLite and (when
ADAPTERPOOL_TEST_POSTGRES_URL is set) PostgreSQL; upload and download MB/s of the pool server.

    .venv/bin/python benchmarks/bench_pool.py [--adds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from adapterpool.loop import adapter_metadata, train_standard
from adapterpool.modeling import save_adapter
from adapterpool.pool import AdapterPool
from adapterpool.pool.remote import RemotePool
from adapterpool.pool.tokens import create_token
from adapterpool.tasks import load_task
from adapterpool.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def writers(pool: AdapterPool, source: Path, count: int, processes: int = 4) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    procs = [subprocess.Popen([sys.executable, "-m", "adapterpool.pool.stress", str(pool.path),
                               str(source), str(w), str(count)],
                              stdout=subprocess.PIPE, text=True, env=env) for w in range(processes)]
    for proc in procs:  # wait until every writer has imported everything
        assert proc.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    for proc in procs:
        proc.communicate()
    return processes * count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adds", type=int, default=10, help="adds per writer")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        seed_pool = AdapterPool.init(tmp / "seed")
        task = load_task("builtin:debate-role", max_train=32, max_eval=16)
        result = train_standard(task, seed_pool.base_model, TrainConfig(epochs=1, max_length=32),
                                show_progress=False, measure_energy=False)
        source = save_adapter(result.model, tmp / "source",
                              adapter_metadata(task, result, parent_id=None, seed=0))
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
        served = AdapterPool.init(tmp / "served")
        token = create_token(served, "bench")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "adapterpool.cli", "serve", str(served.path),
                                   "--port", str(port)], env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
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
                save_file(dict(state) | {key: state[key] + (i + 1) * 1e-4}, folder / "adapter_model.safetensors")
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
