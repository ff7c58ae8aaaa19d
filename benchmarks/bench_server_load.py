"""Pool server under mixed load: uploaders and readers at once against one server on 127.0.0.1.

For ``--seconds`` (default 60), 8 clients upload distinct adapters (perturbed copies of one
trained adapter) with a write token, and 32 clients list, show and download (checking each
download's sha256); the readers run as threads of --reader-processes processes (default 4), so
that the latencies measure the server rather than one client process's GIL (with 1, as before
2026-12, all 40 clients share this process). Every 5th upload attempt is a deliberate refusal,
in turn: a chunked body with no token (401, refused before the body), a chunked body over the
size limit (413, refused at the limit) and a re-upload of an accepted adapter (409), so the
bounded paths run under load.

Reported: requests per kind, p50/p99 latency per kind, errors split into intended refusals and
unexpected ones, adapters lost (every upload answered 201 must be listed afterwards with weights
whose sha256 matches what was sent; must be 0), the server's peak RSS (VmHWM) and its peak
temp-disk use, in all and for one upload (the server runs with TMPDIR on a folder polled every
few ms; files it holds open without a name, as O_TMPFILE temp files are, are counted through
/proc/<pid>/fd). One upload is bounded by the limit; concurrent uploads together by the server's
cap (--max-temp-mb): an upload that does not fit is refused with 503 and Retry-After, counted as
"busy". The 1-minute load average is sampled every second during the run (the machine may be
shared: the results say how busy it was).

    .venv/bin/python benchmarks/bench_server_load.py [--seconds 60] [--uploaders 8]
        [--readers 32] [--seed 0] [--max-upload-mb 16] [--max-temp-mb N] [--tiny]
        [--out benchmarks/results]

Only loopback traffic; every client loop stops by itself at the deadline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import socket
import stat as stat_module
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OK = {"list": 200, "show": 200, "download": 200, "info": 200, "upload": 201}
# Deliberate refusals and the status each must get.
REFUSALS = {"no-token": 401, "over-limit": 413, "duplicate": 409}
BUSY = 503  # an upload that does not fit in the server-wide temp cap (with Retry-After)
FILES = {"adapter_config": "adapter_config.json", "adapter_model": "adapter_model.safetensors",
         "metadata": "adapterpool.json"}


@dataclass
class Stats:
    """Per-kind latencies and outcomes, shared by all client threads (one lock: cheap next to a
    request)."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ok: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unexpected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: list[str] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # adapter id -> sha256 sent
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, outcome: str, note: str = "") -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            getattr(self, outcome)[kind] += 1
            if outcome == "unexpected" and len(self.samples) < 20:
                self.samples.append(f"{kind}: {note}"[:300])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def temp_use(folder: Path, pid: int) -> dict[str, int]:
    """Bytes a process holds under ``folder``, per top-level entry (one per upload: the server
    makes one temp folder per request); open files there without a name (O_TMPFILE) count under
    their link name. Directories are not counted (rmtree holds one open while it deletes)."""
    sizes: dict[tuple[int, int], tuple[str, int]] = {}
    for root, _, names in os.walk(folder):
        group = os.path.relpath(root, folder).split(os.sep)[0]
        for name in names:
            try:
                stat = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            sizes[stat.st_dev, stat.st_ino] = (name if group == "." else group, stat.st_size)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        fds = []
    for fd in fds:
        try:  # stat, name, stat: the fd number may be closed and reused between the calls
            before = os.stat(f"/proc/{pid}/fd/{fd}")
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            stat = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        key = (stat.st_dev, stat.st_ino)
        if (before.st_dev, before.st_ino) == key and key not in sizes \
                and stat_module.S_ISREG(stat.st_mode) and target.startswith(str(folder) + os.sep):
            sizes[key] = (os.path.relpath(target, folder).split(os.sep)[0], stat.st_size)
    groups: dict[str, int] = defaultdict(int)
    for group, size in sizes.values():
        groups[group] += size
    return dict(groups)


def temp_bytes(folder: Path, pid: int) -> int:
    return sum(temp_use(folder, pid).values())


def rss_bytes(pid: int, key: str = "VmRSS") -> int:
    """A /proc/<pid>/status memory figure (VmRSS now, VmHWM the peak) in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Monitor(threading.Thread):
    """Polls the server's temp use (all of it, and the most any one upload held) and its RSS
    until stopped; keeps the peaks."""

    def __init__(self, pid: int, temp: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.temp = pid, temp
        self.peak_temp = self.peak_request_temp = self.peak_rss = 0
        self.loadavg: list[float] = []  # 1-minute load average, sampled every second
        self.stop = threading.Event()

    def run(self) -> None:
        last_load = 0.0
        while not self.stop.is_set():
            if time.monotonic() - last_load >= 1.0:
                last_load = time.monotonic()
                self.loadavg.append(os.getloadavg()[0])
            use = temp_use(self.temp, self.pid)
            self.peak_temp = max(self.peak_temp, sum(use.values()))
            self.peak_request_temp = max(self.peak_request_temp, *use.values(), 0)
            self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))
            time.sleep(0.005)


def prepare_source(tmp: Path, tiny: bool) -> tuple[Path, str | None]:
    """One trained adapter to perturb; on the packaged MiniLM, or (``tiny``) on a 2-layer random
    BERT like the tests' (seconds instead of a minute on a busy machine)."""
    import torch

    from adapterpool.contributing import adapter_metadata
    from adapterpool.models.saving import save_adapter
    from adapterpool.tasks import load_task
    from adapterpool.training.standard import train_standard
    from adapterpool.training.trainer import TrainConfig

    base = None
    if tiny:
        from transformers import AutoTokenizer, BertConfig, BertModel

        from adapterpool.models.base_model import resolve_base_model

        torch.manual_seed(0)
        base = str(tmp / "tiny-bert")
        BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=128)).save_pretrained(base)
        AutoTokenizer.from_pretrained(resolve_base_model(None)).save_pretrained(base)
    task = load_task("builtin:debate-role", max_train=32, max_eval=16)
    result = train_standard(task, base, TrainConfig(epochs=1, max_length=32),
                            show_progress=False, measure_energy=False)
    source = save_adapter(result.model, tmp / "source",
                          adapter_metadata(task, result, parent_id=None, seed=0))
    return source, base


class Variants:
    """Distinct weights on demand: the source with one lora_B tensor shifted by a unique amount
    per (uploader, index), serialized to bytes (never the same sha256 twice)."""

    def __init__(self, source: Path) -> None:
        from safetensors.torch import load_file

        self.state = load_file(source / FILES["adapter_model"])
        self.key = next(k for k in sorted(self.state) if "lora_B" in k)
        self.config = (source / FILES["adapter_config"]).read_bytes()
        self.meta = (source / FILES["metadata"]).read_bytes()

    def weights(self, worker: int, index: int) -> bytes:
        from safetensors.torch import save

        shifted = dict(self.state)
        shifted[self.key] = self.state[self.key] + (worker * 100_000 + index + 1) * 1e-6
        return save(shifted)


def lazy_form(boundary: str, size: int, variants: Variants) -> Iterator[bytes]:
    """A valid multipart upload with a ``size``-byte adapter_model part, generated as it is sent
    (httpx sends an iterator chunked, without Content-Length)."""
    for name in ("adapter_config", "metadata"):
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
               f"filename=\"{FILES[name]}\"\r\n\r\n").encode()
        yield (variants.config if name == "adapter_config" else variants.meta) + b"\r\n"
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"adapter_model\"; "
           f"filename=\"{FILES['adapter_model']}\"\r\n\r\n").encode()
    zeros = b"\0" * (256 * 1024)
    for offset in range(0, size, len(zeros)):
        yield zeros[:size - offset]
    yield f"\r\n--{boundary}--\r\n".encode()


def uploader(worker: int, url: str, token: str, variants: Variants, deadline: float,
             limit: int, stats: Stats) -> None:
    """Uploads distinct adapters until the deadline; every 5th attempt is a deliberate refusal."""
    auth = {"Authorization": f"Bearer {token}"}
    mine: list[tuple[str, bytes]] = []  # accepted uploads, to re-send as duplicates
    with httpx.Client(base_url=url, timeout=120) as client:
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            kind, expected = "upload", OK["upload"]
            weights = b""
            if attempt % 5 == 0:
                kind = list(REFUSALS)[(attempt // 5 + worker) % len(REFUSALS)]
                if kind == "duplicate" and not mine:
                    kind = "no-token"
                expected = REFUSALS[kind]
            if kind in ("upload", "duplicate"):
                weights = variants.weights(worker, attempt) if kind == "upload" else mine[0][1]
                request = {"files": {
                    "adapter_config": (FILES["adapter_config"], variants.config),
                    "adapter_model": (FILES["adapter_model"], weights),
                    "metadata": (FILES["metadata"], variants.meta)}, "headers": auth}
            else:
                boundary = f"bench-{worker}-{attempt}"
                size = 8 * 2**20 if kind == "no-token" else limit + 4 * 2**20
                request = {"content": lazy_form(boundary, size, variants), "headers": {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    **(auth if kind == "over-limit" else {})}}
            start = time.perf_counter()
            try:
                response = client.post("/api/adapters", **request)
            except httpx.HTTPError as exc:
                stats.record(kind, time.perf_counter() - start, "unexpected", repr(exc))
                continue
            seconds = time.perf_counter() - start
            if response.status_code == BUSY and "retry-after" in response.headers \
                    and kind in ("upload", "duplicate", "over-limit"):
                # the server-wide temp cap was reached: refused before the body, as intended
                stats.record("busy", seconds, "refused")
                continue
            if response.status_code != expected:
                stats.record(kind, seconds, "unexpected",
                             f"{response.status_code} {response.text[:200]}")
                continue
            stats.record(kind, seconds, "ok" if kind == "upload" else "refused")
            if kind == "upload":
                adapter_id = response.json()["id"]
                mine.append((adapter_id, weights))
                with stats.lock:
                    stats.accepted[adapter_id] = hashlib.sha256(weights).hexdigest()


def reader(worker: int, url: str, deadline: float, seed: int, stats: Stats) -> None:
    """Lists, shows and downloads (sha256-checked) until the deadline, in a seeded mix."""
    rng = np.random.default_rng([seed, worker])
    ids: list[str] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        while time.monotonic() < deadline:
            kind = str(rng.choice(["list", "show", "download", "info"], p=[0.3, 0.3, 0.3, 0.1]))
            if kind in ("show", "download") and not ids:
                kind = "list"
            start = time.perf_counter()
            try:
                if kind == "list":
                    response = client.get("/api/adapters")
                    if response.status_code == 200:
                        ids = [r["id"] for r in response.json()]
                elif kind == "info":
                    response = client.get("/api/info")
                elif kind == "show":
                    response = client.get(f"/api/adapters/{ids[rng.integers(len(ids))]}")
                else:
                    adapter_id = ids[rng.integers(len(ids))]
                    response = client.get(
                        f"/api/adapters/{adapter_id}/files/adapter_model.safetensors")
                    if response.status_code == 200 and hashlib.sha256(
                            response.content).hexdigest() != response.headers["X-Adapter-SHA256"]:
                        stats.record(kind, time.perf_counter() - start, "unexpected",
                                     f"{adapter_id}: downloaded weights fail their sha256")
                        continue
            except httpx.HTTPError as exc:
                stats.record(kind, time.perf_counter() - start, "unexpected", repr(exc))
                continue
            seconds = time.perf_counter() - start
            if response.status_code == OK[kind]:
                stats.record(kind, seconds, "ok")
            else:
                stats.record(kind, seconds, "unexpected",
                             f"{response.status_code} {response.text[:200]}")


def reader_process(workers: list[int], url: str, start_at: float, deadline: float, seed: int,
                   conn) -> None:
    """Reader threads ``workers`` in a process of their own (from ``start_at``, a monotonic time:
    the clock is system-wide); sends its Stats' figures back through ``conn`` at the end."""
    stats = Stats()
    time.sleep(max(0.0, start_at - time.monotonic()))
    threads = [threading.Thread(target=reader, daemon=True, args=(w, url, deadline, seed, stats))
               for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conn.send({"latencies": dict(stats.latencies), "ok": dict(stats.ok),
               "refused": dict(stats.refused), "unexpected": dict(stats.unexpected),
               "samples": stats.samples})
    conn.close()


def merge(stats: Stats, figures: dict) -> None:
    with stats.lock:
        for kind, values in figures["latencies"].items():
            stats.latencies[kind].extend(values)
        for name in ("ok", "refused", "unexpected"):
            for kind, n in figures[name].items():
                getattr(stats, name)[kind] += n
        stats.samples.extend(figures["samples"][:20 - len(stats.samples)])


def count_lost(url: str, accepted: dict[str, str]) -> tuple[int, list[str]]:
    """Accepted uploads missing from the list, or whose served weights differ from those sent."""
    lost = []
    with httpx.Client(base_url=url, timeout=120) as client:
        listed = {r["id"]: r for r in client.get("/api/adapters").json()}
        for adapter_id, sha in sorted(accepted.items()):
            record = listed.get(adapter_id)
            if record is None or record["sha256"] != sha:
                lost.append(adapter_id)
                continue
            body = client.get(f"/api/adapters/{adapter_id}/files/adapter_model.safetensors")
            if body.status_code != 200 or hashlib.sha256(body.content).hexdigest() != sha:
                lost.append(adapter_id)
    return len(lost), lost


def summarize(stats: Stats) -> dict[str, dict]:
    kinds = {}
    for kind in [*OK, *REFUSALS, "busy"]:
        lat = np.array(stats.latencies.get(kind, []), dtype=float) * 1000
        kinds[kind] = {
            "requests": int(lat.size), "ok": stats.ok.get(kind, 0),
            "refused_as_intended": stats.refused.get(kind, 0),
            "unexpected": stats.unexpected.get(kind, 0),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        }
    return kinds


def write_markdown(path: Path, result: dict) -> None:
    env, run = result["environment"], result["run"]
    lines = [
        "# Pool server under mixed load",
        "",
        f"`{result['command']}`",
        "",
        (f"{run['seconds']} s, {run['uploaders']} uploaders + {run['readers']} readers (in "
         f"{run['reader_processes']} processes; the uploaders in this one) on one "
         f"server (127.0.0.1, --max-upload-mb {run['max_upload_mb']}), base model "
         f"{run['base_model']}, {run['adapter_mib']:.2f} MiB of weights per adapter, seed "
         f"{run['seed']}; one warm-up upload before the clock "
         f"({run['warmup_upload_seconds']} s: the server's first add imports torch/peft and "
         "builds the model for the shape check). "
         f"Machine: {env['nproc']} CPU cores; {env['note'] or 'what else ran: not recorded'}; "
         f"1-minute load average {env['loadavg_start'][0]:.1f} "
         f"at start, {env['loadavg_during']['mean']:.1f} on average during the run (max "
         f"{env['loadavg_during']['max']:.1f}), {env['loadavg_end'][0]:.1f} at end; clients "
         "and server on the same cores, so latencies include client-side contention."),
        "",
        "| kind | requests | ok | refused as intended | unexpected | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, row in result["kinds"].items():
        lines.append(f"| {kind} | {row['requests']} | {row['ok']} | "
                     f"{row['refused_as_intended']} | {row['unexpected']} | {row['p50_ms']} | "
                     f"{row['p99_ms']} |")
    s = result["server"]
    lines += [
        "",
        (f"- adapters accepted (201): {result['adapters']['accepted']}; lost: "
         f"**{result['adapters']['lost']}** (listed afterwards, weights' sha256 verified)"),
        f"- server peak RSS (VmHWM): {s['peak_rss_mib']:.0f} MiB",
        (f"- server peak temp-disk use: {s['peak_temp_mib']:.2f} MiB in all (concurrent "
         f"uploads), {s['peak_temp_one_upload_mib']:.2f} MiB for one upload (limit "
         f"{run['max_upload_mb']} MiB), server-wide cap {s['temp_cap_mib']:.0f} MiB (peak "
         f"within it: {s['peak_temp_within_cap']}); temp folder empty afterwards: "
         f"{s['temp_empty_after']}"),
        "",
        ("no-token: chunked 8 MiB body without a token (401 before the body is read); "
         "over-limit: chunked body 4 MiB over the limit with a token (413 at the limit); "
         "duplicate: re-upload of an accepted adapter (409); busy: an upload refused before "
         "its body because the server-wide temp cap was in use (503 with Retry-After)."),
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the load")
    parser.add_argument("--uploaders", type=int, default=8)
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the readers' request mix")
    parser.add_argument("--max-upload-mb", type=int, default=16, help="the server's limit")
    parser.add_argument("--max-temp-mb", type=int, default=None,
                        help="the server's cap on all uploads' temp disk (default: its own, 4 x "
                             "the upload limit)")
    parser.add_argument("--reader-processes", type=int, default=4,
                        help="processes the readers are spread over (1: threads of this "
                             "process, beside the uploaders, as before 2026-12)")
    parser.add_argument("--tiny", action="store_true",
                        help="a 2-layer random BERT instead of the packaged MiniLM (faster)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--note", default="", help="what else ran on the machine (recorded)")
    args = parser.parse_args()
    command = " ".join([".venv/bin/python", "benchmarks/bench_server_load.py",
                        *map(shlex.quote, sys.argv[1:])])
    loadavg_start = os.getloadavg()
    temp_cap = (args.max_temp_mb or 4 * args.max_upload_mb) * 2**20

    from adapterpool.pool import AdapterPool
    from adapterpool.pool.tokens import create_token

    tmp = Path(tempfile.mkdtemp(prefix="bench-server-load-"))
    server = None
    try:
        print("training a source adapter ...", flush=True)
        source, base = prepare_source(tmp, args.tiny)
        variants = Variants(source)
        pool = AdapterPool.init(tmp / "pool", base_model=base)
        for i in range(4):  # something to read from the first request on
            folder = tmp / f"seed{i}"
            shutil.copytree(source, folder)
            (folder / FILES["adapter_model"]).write_bytes(variants.weights(99, i))
            pool.add(folder)
        token = create_token(pool, "bench")
        temp = tmp / "server-tmp"
        temp.mkdir()
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed in finally
        server = subprocess.Popen(
            [sys.executable, "-m", "adapterpool.cli", "serve", str(pool.path), "--port",
             str(port), "--max-upload-mb", str(args.max_upload_mb),
             *(["--max-temp-mb", str(args.max_temp_mb)] if args.max_temp_mb else [])],
            env=dict(os.environ, PYTHONPATH=str(ROOT / "src"), TMPDIR=str(temp)),
            stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                if httpx.get(url + "/api/info", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("server did not start:\n" + (tmp / "server.log").read_text()[-2000:])
        # The server's first add imports torch/transformers/peft and builds the base model once
        # for the shape check (many seconds); done before the clock so latencies are steady-state.
        start = time.perf_counter()
        warmup = httpx.post(url + "/api/adapters", timeout=600, files={
            "adapter_config": (FILES["adapter_config"], variants.config),
            "adapter_model": (FILES["adapter_model"], variants.weights(98, 0)),
            "metadata": (FILES["metadata"], variants.meta)},
            headers={"Authorization": f"Bearer {token}"})
        warmup_seconds = time.perf_counter() - start
        if warmup.status_code != 201:
            raise SystemExit(f"warm-up upload failed: {warmup.status_code} {warmup.text}")
        print(f"server pid {server.pid} on {url}; first (warm-up) upload took "
              f"{warmup_seconds:.1f} s; {args.uploaders} uploaders + {args.readers} "
              f"readers for {args.seconds:g} s ({os.cpu_count()} cores, load average "
              f"{loadavg_start[0]:.1f})", flush=True)

        stats = Stats()
        monitor = Monitor(server.pid, temp)
        # Readers in --reader-processes processes of their own (spawned: this one holds torch),
        # so that one client process's GIL is not what the latencies measure; all clients start
        # together once those processes are up.
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        start_at = time.monotonic() + 8.0
        started, deadline = start_at, start_at + args.seconds
        processes, pipes = [], []
        reader_ids = list(range(args.readers))
        groups = [reader_ids[i::args.reader_processes] for i in range(args.reader_processes)]
        if args.reader_processes > 1:
            for group in groups:
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=reader_process, daemon=True, args=(
                    group, url, start_at, deadline, args.seed, send))
                process.start()
                processes.append(process)
                pipes.append(receive)
        time.sleep(max(0.0, start_at - time.monotonic()))
        monitor.start()
        threads = [threading.Thread(target=uploader, daemon=True, args=(
            w, url, token, variants, deadline, args.max_upload_mb * 2**20, stats))
            for w in range(args.uploaders)]
        if args.reader_processes <= 1:
            threads += [threading.Thread(target=reader, daemon=True,
                                         args=(w, url, deadline, args.seed, stats))
                        for w in reader_ids]
        for thread in threads:
            thread.start()
        next_report = 5.0
        while any(t.is_alive() for t in threads):
            time.sleep(0.5)
            elapsed = time.monotonic() - started
            if elapsed >= next_report or not any(t.is_alive() for t in threads):
                next_report += 5
                with stats.lock:
                    done = {k: len(v) for k, v in stats.latencies.items()}
                    bad = sum(stats.unexpected.values())
                print(f"  {elapsed:5.1f} s  " + " ".join(f"{k}={n}" for k, n in sorted(
                    done.items())) + f"  unexpected={bad}  rss={monitor.peak_rss / 2**20:.0f}"
                    f" MiB  temp-peak={monitor.peak_temp / 2**20:.2f} MiB"
                    f" (one upload {monitor.peak_request_temp / 2**20:.2f})", flush=True)
            if elapsed > args.seconds + 300:
                raise SystemExit("clients did not stop 300 s after the deadline")
        for receive, process in zip(pipes, processes, strict=True):
            if not receive.poll(300):
                raise SystemExit("a reader process did not report 300 s after the deadline")
            merge(stats, receive.recv())
            process.join(30)
        wall = time.monotonic() - started
        time.sleep(0.5)  # let the last refused connections close
        monitor.stop.set()
        monitor.join()
        lost, lost_ids = count_lost(url, stats.accepted)
        temp_empty = temp_bytes(temp, server.pid) == 0 and not any(temp.iterdir())
        peak_rss = max(rss_bytes(server.pid, "VmHWM"), monitor.peak_rss)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    result = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": {"nproc": os.cpu_count(), "loadavg_start": loadavg_start,
                        "loadavg_end": os.getloadavg(), "python": platform.python_version(),
                        "loadavg_during": {
                            "mean": round(float(np.mean(monitor.loadavg)), 2),
                            "max": round(float(np.max(monitor.loadavg)), 2),
                            "samples": len(monitor.loadavg)},
                        "note": args.note},
        "run": {"seconds": args.seconds, "wall_seconds": round(wall, 1),
                "uploaders": args.uploaders, "readers": args.readers, "seed": args.seed,
                "reader_processes": args.reader_processes,
                "max_upload_mb": args.max_upload_mb,
                "base_model": "tiny random BERT" if args.tiny else "packaged MiniLM",
                "adapter_mib": (source / FILES["adapter_model"]).stat().st_size / 2**20,
                "warmup_upload_seconds": round(warmup_seconds, 1)},
        "kinds": summarize(stats),
        "unexpected_samples": stats.samples,
        "adapters": {"accepted": len(stats.accepted), "lost": lost, "lost_ids": lost_ids},
        "server": {"peak_rss_mib": round(peak_rss / 2**20, 1),
                   "peak_temp_mib": round(monitor.peak_temp / 2**20, 3),
                   "peak_temp_one_upload_mib": round(monitor.peak_request_temp / 2**20, 3),
                   "temp_empty_after": temp_empty,
                   "temp_cap_mib": temp_cap / 2**20,
                   "peak_temp_within_cap": monitor.peak_temp <= temp_cap},
    }
    shutil.rmtree(tmp, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "server_load.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.out / "server_load.md", result)

    print(f"\n{'kind':<11}{'requests':>9}{'ok':>7}{'refused':>9}{'unexpected':>11}"
          f"{'p50 ms':>9}{'p99 ms':>9}")
    for kind, row in result["kinds"].items():
        print(f"{kind:<11}{row['requests']:>9}{row['ok']:>7}{row['refused_as_intended']:>9}"
              f"{row['unexpected']:>11}{row['p50_ms'] or '-':>9}{row['p99_ms'] or '-':>9}")
    print(f"adapters accepted {len(stats.accepted)}, lost {lost}; server peak RSS "
          f"{peak_rss / 2**20:.0f} MiB; peak temp {monitor.peak_temp / 2**20:.2f} MiB in all, "
          f"{monitor.peak_request_temp / 2**20:.2f} MiB for one upload (limit "
          f"{args.max_upload_mb} MiB), temp empty after: {temp_empty}")
    for sample in stats.samples[:5]:
        print("  unexpected:", sample)
    print(f"wrote {args.out / 'server_load.json'} and {args.out / 'server_load.md'}")
    if lost:
        raise SystemExit(f"{lost} accepted adapters lost: {lost_ids}")


if __name__ == "__main__":
    main()
