"""Pool server replicas: several ``adapterpool serve`` processes on one PostgreSQL catalog and one
storage root, written through all at once.

For ``--seconds`` (default 60), ``--uploaders`` clients (default 8) upload distinct adapters
(perturbed copies of one trained adapter), each sending its uploads to the replicas in turn;
every 5th attempt instead races one new adapter to two replicas at once (exactly one may get 201,
the other 409), and every 7th re-sends an accepted adapter to another replica (409). A remover
deletes an accepted adapter every second through a replica, and ``adapterpool pool verify
--repair`` runs every ``--repair-every`` seconds beside them all.

Afterwards every replica must list the same adapters: every accepted upload not removed (else it
is *lost*), each once (else *duplicated*), no removed one; every listed adapter's weights are
downloaded (through the replicas in turn) and must hash to what was sent; ``verify`` must find
the pool consistent. Written to ``--out``/server_replicas.json (``replicas``,
``uploads_accepted``, ``lost``, ``seconds`` and the rest).

    PYTHONPATH=src python benchmarks/bench_server_replicas.py \
        --catalog postgresql+psycopg://USER@HOST:PORT/DB [--replicas 2] [--uploaders 8] \
        [--seconds 60] [--out benchmarks/results]

``--catalog``: an empty PostgreSQL database (``bash .ci/postgres.sh`` starts a throwaway server
and prints a URL). Only loopback traffic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server_load import FILES, Variants, prepare_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Ledger:
    """What the clients saw, shared by their threads."""

    accepted: dict[str, str] = field(default_factory=dict)  # adapter id -> sha256 sent
    removed: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    repairs: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def oops(self, what: str) -> None:
        with self.lock:
            self.counts["unexpected"] += 1
            if len(self.unexpected) < 20:
                self.unexpected.append(what)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_replicas(pool: Path, n: int, env: dict) -> tuple[list[str], list[subprocess.Popen]]:
    """``n`` ``adapterpool serve`` processes on free loopback ports, once each answers."""
    urls, processes = [], []
    for _ in range(n):
        port = _free_port()
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "adapterpool.cli", "serve", str(pool), "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 120
    for url, process in zip(urls, processes, strict=True):
        while True:
            try:
                if httpx.get(url + "/api/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                stop(processes)
                raise RuntimeError(f"replica {url} did not start: {process.stderr.read()[-2000:]}")
            time.sleep(0.3)
    return urls, processes


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _upload(client: httpx.Client, url: str, auth: dict, variants: Variants,
            weights: bytes) -> httpx.Response:
    return client.post(url + "/api/adapters", headers=auth, files={
        "adapter_config": (FILES["adapter_config"], variants.config),
        "adapter_model": (FILES["adapter_model"], weights),
        "metadata": (FILES["metadata"], variants.meta)})


def race(urls: list[str], auth: dict, variants: Variants, weights: bytes) -> list[httpx.Response]:
    """The same new adapter to every replica of ``urls`` at once; their answers."""
    answers: list[httpx.Response] = []

    def send(target: str) -> None:
        with httpx.Client(timeout=120) as own:
            answers.append(_upload(own, target, auth, variants, weights))

    threads = [threading.Thread(target=send, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def uploader(worker: int, urls: list[str], auth: dict, variants: Variants, deadline: float,
             ledger: Ledger) -> None:
    """Distinct uploads to the replicas in turn; races and duplicates on the side."""
    mine: list[bytes] = []
    with httpx.Client(timeout=120) as client:
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            url = urls[(worker + attempt) % len(urls)]
            other = urls[(worker + attempt + 1) % len(urls)]
            try:
                if attempt % 7 == 0 and mine:  # an accepted adapter again, elsewhere: 409
                    response = _upload(client, other, auth, variants, mine[-1])
                    ok = response.status_code == 409
                    ledger.count("duplicates_refused" if ok else "unexpected_duplicate")
                    if not ok:
                        ledger.oops(f"re-upload got {response.status_code}")
                    continue
                weights = variants.weights(worker, attempt)
                sha = hashlib.sha256(weights).hexdigest()
                if attempt % 5 == 0:  # one new adapter to two replicas at once
                    answers = race([url, other], auth, variants, weights)
                    codes = sorted(r.status_code for r in answers)
                    ledger.count("races")
                    if codes != [201, 409]:
                        ledger.oops(f"race answered {codes}")
                    winners = [r for r in answers if r.status_code == 201]
                else:
                    response = _upload(client, url, auth, variants, weights)
                    if response.status_code != 201:
                        ledger.oops(f"upload got {response.status_code} {response.text[:200]}")
                    winners = [response] if response.status_code == 201 else []
            except httpx.HTTPError as exc:
                ledger.oops(repr(exc))
                continue
            for response in winners:
                with ledger.lock:
                    ledger.accepted[response.json()["id"]] = sha
                    ledger.counts["uploads_accepted"] += 1
                mine.append(weights)


def remover(urls: list[str], auth: dict, deadline: float, ledger: Ledger, seed: int) -> None:
    """Removes one accepted adapter a second (a seeded choice), through the replicas in turn."""
    rng = random.Random(seed)
    with httpx.Client(timeout=120) as client:
        turn = 0
        while time.monotonic() < deadline - 1:
            time.sleep(1)
            with ledger.lock:
                alive = sorted(set(ledger.accepted) - ledger.removed)
            if not alive:
                continue
            victim = rng.choice(alive)
            turn += 1
            response = client.delete(f"{urls[turn % len(urls)]}/api/adapters/{victim}",
                                      headers=auth)
            if response.status_code == 200:
                with ledger.lock:
                    ledger.removed.add(victim)
            else:
                ledger.oops(f"remove {victim} got {response.status_code}")


def repairer(pool: Path, every: float, deadline: float, ledger: Ledger, env: dict) -> None:
    """``pool verify --repair`` every ``every`` seconds, beside the writers."""
    while time.monotonic() + every < deadline:
        time.sleep(every)
        proc = subprocess.run([sys.executable, "-m", "adapterpool.cli", "pool", "verify",
                               str(pool), "--repair", "--json"], env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        try:
            report = json.loads(proc.stdout[proc.stdout.index("{"):])
        except ValueError:
            ledger.oops(f"verify --repair: {proc.stderr[-500:]}")
            continue
        with ledger.lock:
            ledger.repairs.append(report)


def check_pool(urls: list[str], ledger: Ledger) -> dict:
    """Every replica's listing against the ledger; every listed adapter's weights hashed."""
    expected = set(ledger.accepted) - ledger.removed
    listings = []
    with httpx.Client(timeout=120) as client:
        for url in urls:
            listings.append([r["id"] for r in client.get(url + "/api/adapters").json()])
        listed = listings[0]
        bad_hashes = []
        for i, adapter_id in enumerate(listed):
            url = urls[i % len(urls)]
            body = client.get(f"{url}/api/adapters/{adapter_id}/files/"
                              f"{FILES['adapter_model']}").content
            sent = ledger.accepted.get(adapter_id)
            if hashlib.sha256(body).hexdigest() != sent:
                bad_hashes.append(adapter_id)
    return {
        "lost": len(expected - set(listed)),
        "duplicated": len(listed) - len(set(listed)),
        "unknown": len(set(listed) - set(ledger.accepted)),
        "removed_still_listed": len(set(listed) & ledger.removed),
        "replicas_agree": all(sorted(x) == sorted(listed) for x in listings),
        "listed": len(listed),
        "hashes_checked": len(listed),
        "bad_hashes": len(bad_hashes),
    }


def warm_up(urls: list[str], auth: dict, variants: Variants, ledger: Ledger) -> None:
    """One upload through each replica before the clock starts: a replica's first add loads
    the model layer to check tensor shapes (seconds), which is start-up, not throughput. They
    join the ledger (checked like the others) but not ``uploads_accepted``."""
    with httpx.Client(timeout=300) as client:
        for i, url in enumerate(urls):
            weights = variants.weights(10_000 + i, 0)  # no uploader uses these numbers
            response = _upload(client, url, auth, variants, weights)
            if response.status_code != 201:
                raise RuntimeError(f"warm-up upload to {url}: {response.status_code} "
                                   f"{response.text[:300]}")
            ledger.accepted[response.json()["id"]] = hashlib.sha256(weights).hexdigest()


def run(pool: Path, source: Path, *, replicas: int = 2, uploaders: int = 8,
        seconds: float = 60.0, repair_every: float = 10.0, seed: int = 0,
        env: dict | None = None) -> dict:
    """Replicas of the (initialised, PostgreSQL-catalogued) pool at ``pool`` under load; the
    figures. ``source``: the adapter folder whose perturbed copies are uploaded."""
    from adapterpool.pool import AdapterPool
    from adapterpool.pool.maintenance import verify
    from adapterpool.pool.tokens import create_token

    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    auth = {"Authorization": f"Bearer {create_token(AdapterPool(pool), 'replica-bench')}"}
    variants = Variants(source)
    ledger = Ledger()
    urls, processes = start_replicas(pool, replicas, env)
    try:
        warm_up(urls, auth, variants, ledger)
        started = time.monotonic()
        deadline = started + seconds
        threads = [threading.Thread(target=uploader, args=(w, urls, auth, variants, deadline,
                                                           ledger)) for w in range(uploaders)]
        threads.append(threading.Thread(target=remover, args=(urls, auth, deadline, ledger,
                                                              seed)))
        threads.append(threading.Thread(target=repairer, args=(pool, repair_every, deadline,
                                                               ledger, env)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        checked = check_pool(urls, ledger)
    finally:
        stop(processes)
    final = verify(AdapterPool(pool))
    return {
        "replicas": replicas,
        "uploaders": uploaders,
        "uploads_accepted": ledger.counts["uploads_accepted"],
        "warm_up_uploads": replicas,
        "lost": checked["lost"],
        "seconds": round(elapsed, 1),
        "duplicated": checked["duplicated"],
        "races": ledger.counts["races"],
        "duplicates_refused": ledger.counts["duplicates_refused"],
        "removed": len(ledger.removed),
        "removed_still_listed": checked["removed_still_listed"],
        "unknown_listed": checked["unknown"],
        "replicas_agree": checked["replicas_agree"],
        "hashes_checked": checked["hashes_checked"],
        "bad_hashes": checked["bad_hashes"],
        "repairs": len(ledger.repairs),
        "repair_deleted": sum(len(r["orphans"]) + len(r["leftovers"]) for r in ledger.repairs),
        "repair_deleted_catalogued": len(
            {str(o) for r in ledger.repairs for o in r["orphans"]}
            & {a for a in ledger.accepted if a not in ledger.removed}),
        "final_verify_consistent": final["consistent"],
        "unexpected": ledger.counts["unexpected"],
        "unexpected_samples": ledger.unexpected,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", required=True, help="SQLAlchemy URL of an empty PostgreSQL "
                        "database")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--uploaders", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repair-every", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    from adapterpool.pool import AdapterPool
    from adapterpool.verbosity import quiet_third_party

    quiet_third_party()
    with tempfile.TemporaryDirectory(prefix="adapterpool-replicas-") as tmp:
        source, base = prepare_source(Path(tmp), tiny=True)
        AdapterPool.init(Path(tmp) / "pool", base_model=base, catalog_url=args.catalog)
        result = run(Path(tmp) / "pool", source, replicas=args.replicas,
                     uploaders=args.uploaders, seconds=args.seconds,
                     repair_every=args.repair_every, seed=args.seed)
    result = {**result, "command": "PYTHONPATH=src python benchmarks/bench_server_replicas.py "
              f"--catalog URL --replicas {args.replicas} --uploaders {args.uploaders} "
              f"--seconds {args.seconds:g}","catalog": "postgresql",
              "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "nproc": os.cpu_count(), "loadavg_end": os.getloadavg()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "server_replicas.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    ok = (result["lost"] == 0 and result["duplicated"] == 0 and result["bad_hashes"] == 0
          and result["unexpected"] == 0 and result["final_verify_consistent"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
