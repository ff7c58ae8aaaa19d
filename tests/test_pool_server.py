"""The pool server over real HTTP on 127.0.0.1: reads for all, writes with a token, every check
re-run on uploads, size limits, and the loop drawing from a remote pool."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import stat as stat_module
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx
import pytest

from adapterpool.pool import (
    AdapterPool,
    AdapterRejected,
    DuplicateAdapterError,
    PoolError,
    open_pool,
)
from adapterpool.pool.tokens import create_token
from tests.conftest import serving

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_pool, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_pool.path, root / "pool")
    pool = AdapterPool(root / "pool")
    token = create_token(pool, "alice")
    temp = root / "server-tmp"  # the server's TMPDIR: every temp file it makes lands here
    temp.mkdir()
    with serving(pool.path, "--max-upload-mb", "2", env={"TMPDIR": str(temp)}) as (url, process):
        yield {"url": url, "token": token, "pool": pool, "cache": root / "cache", "temp": temp,
               "pid": process.pid}


def _remote(server, token=None):
    from adapterpool.pool.remote import RemotePool

    return RemotePool(server["url"], token=token, cache_dir=server["cache"])


def _incoming(server, tmp_path, delta: float = 1e-3) -> Path:
    """A new, valid adapter: a pool adapter with one tensor nudged."""
    from safetensors.torch import load_file, save_file

    pool = server["pool"]
    folder = tmp_path / "incoming"
    shutil.copytree(pool.adapter_dir(pool.list()[0].id), folder)
    state = load_file(folder / "adapter_model.safetensors")
    key = next(k for k in sorted(state) if "lora_B" in k)
    state[key] = state[key] + delta
    save_file(state, folder / "adapter_model.safetensors")
    return folder


def test_list_search_and_verified_download(server):
    remote = open_pool(server["url"])
    assert remote.base_model == server["pool"].base_model
    assert {r.id for r in remote.list()} == {r.id for r in server["pool"].list()}
    found = httpx.get(server["url"] + "/api/adapters", params={"kind": "pair"}).json()
    assert [r["task_name"] for r in found] == ["word-sense"]
    remote = _remote(server)
    record = remote.list()[0]
    folder = remote.adapter_dir(record.id)
    assert folder.name == record.sha256
    assert (folder / "adapter_model.safetensors").read_bytes() == (
        server["pool"].adapter_dir(record.id) / "adapter_model.safetensors").read_bytes()


def test_contribute_needs_a_valid_token(server, tmp_path):
    folder = _incoming(server, tmp_path, 2e-3)
    with pytest.raises(PoolError, match="needs a write token"):
        _remote(server).add(folder)
    with pytest.raises(PoolError, match="401: invalid write token"):
        _remote(server, token="apw_wrong").add(folder)
    response = httpx.post(server["url"] + "/api/adapters", files={
        "adapter_config": ("c", b"{}"), "adapter_model": ("m", b""), "metadata": ("j", b"{}")})
    assert response.status_code == 401 and "write token is required" in response.json()["detail"]
    parent = server["pool"].list()[0].id
    record = _remote(server, token=server["token"]).add(folder, parent_id=parent)
    assert record.parent_id == parent
    assert server["pool"].get(record.id).sha256 == record.sha256
    with pytest.raises(DuplicateAdapterError):
        _remote(server, token=server["token"]).add(folder)


def test_server_reruns_checks_on_malicious_uploads(server, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    folder = _incoming(server, tmp_path, 3e-3)
    before = [r.id for r in server["pool"].list()]
    headers = {"Authorization": f"Bearer {server['token']}"}
    meta = (folder / "adapterpool.json").read_bytes()
    config = (folder / "adapter_config.json").read_bytes()
    response = httpx.post(server["url"] + "/api/adapters", headers=headers, files={
        "adapter_config": ("adapter_config.json", config),
        "adapter_model": ("adapter_model.safetensors", pickle.dumps(Payload())),
        "metadata": ("adapterpool.json", meta)})
    assert response.status_code == 400 and "pickle" in response.json()["detail"]
    other_base = json.loads(config)
    other_base["base_model_name_or_path"] = "roberta-base"
    response = httpx.post(server["url"] + "/api/adapters", headers=headers, files={
        "adapter_config": ("adapter_config.json", json.dumps(other_base).encode()),
        "adapter_model": ("adapter_model.safetensors",
                          (folder / "adapter_model.safetensors").read_bytes()),
        "metadata": ("adapterpool.json", meta)})
    assert response.status_code == 400 and "roberta-base" in response.json()["detail"]
    big = httpx.post(server["url"] + "/api/adapters", headers=headers, files={
        "adapter_config": ("adapter_config.json", config),
        "adapter_model": ("adapter_model.safetensors", b"\0" * (3 * 1024 * 1024)),
        "metadata": ("adapterpool.json", meta)})
    assert big.status_code == 413
    assert httpx.get(server["url"] + "/api/adapters/..%2F..%2Fetc/files/passwd").status_code == 404
    record_id = before[0]
    response = httpx.get(f"{server['url']}/api/adapters/{record_id}/files/catalog.sqlite")
    assert response.status_code == 404
    assert not marker.exists()
    assert [r.id for r in server["pool"].list()] == before


def test_client_refuses_to_upload_pickles(server, tmp_path):
    folder = _incoming(server, tmp_path, 4e-3)
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(AdapterRejected, match="pickle-based weights are refused"):
        _remote(server, token=server["token"]).add(folder)


def test_rank_and_adapt_from_a_remote_pool(server, tmp_path):
    from adapterpool import AdaptConfig, adapt, load_task
    from adapterpool.training.trainer import TrainConfig

    task = load_task("builtin:movie-sentiment", max_train=48, max_eval=24)
    remote = _remote(server, token=server["token"])
    before = len(remote.list())
    config = AdaptConfig(metric="leep", subset=2, max_tries=1, threshold=0.0, transfer_epochs=1,
                         fallback=TrainConfig(epochs=1, max_length=32, evals_per_epoch=1),
                         contribute=True, max_samples=32)
    report = adapt(task, remote, config, out_dir=tmp_path / "run", show_progress=False,
                   measure_energy=False).report
    assert report["outcome"] == "transfer"
    assert len(remote.list()) == before + 1
    contributed = remote.get(report["contributed_adapter_id"])
    assert contributed.parent_id == report["attempts"][0]["adapter_id"]


# -- bounded uploads ----------------------------------------------------------------------------
LIMIT = 2 * 1024 * 1024  # the fixture's --max-upload-mb 2
SLACK = 256 * 1024
BOUNDARY = "adapterpool-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def _temp_bytes(folder: Path, pid: int) -> int:
    """Bytes the server holds under its temp folder: named files there, plus files it has open
    there that have no name (``tempfile.TemporaryFile`` uses O_TMPFILE on Linux, which a walk of
    the folder cannot see, but /proc/<pid>/fd can)."""
    sizes: dict[tuple[int, int], int] = {}
    for root, _, names in os.walk(folder):  # os.walk skips folders deleted while it runs
        for name in names:
            try:
                stat = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            if stat_module.S_ISREG(stat.st_mode):
                sizes[stat.st_dev, stat.st_ino] = stat.st_size
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
        if (before.st_dev, before.st_ino) == key and stat_module.S_ISREG(stat.st_mode) \
                and target.startswith(str(folder) + os.sep):
            sizes[key] = stat.st_size
    return sum(sizes.values())


class _TempWatch:
    """Polls the server's temp use in a thread while a request runs; ``peak`` is the most seen."""

    def __init__(self, server: dict) -> None:
        self.server = server
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _temp_bytes(self.server["temp"], self.server["pid"]))
            time.sleep(0.002)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class _LazyForm:
    """A valid multipart form whose adapter_model part is ``size`` zero bytes, made on demand
    (never held in memory); ``sent`` counts what the client has pulled from it so far. httpx
    sends an iterable body chunked, without Content-Length."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        def part(name: str, filename: str) -> bytes:
            return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                    f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                    ).encode()

        chunks = [part("adapter_config", "adapter_config.json") + b"{}\r\n",
                  part("metadata", "adapterpool.json") + b"{}\r\n",
                  part("adapter_model", "adapter_model.safetensors")]
        for chunk in chunks:
            self.sent += len(chunk)
            yield chunk
        zeros = b"\0" * (64 * 1024)
        remaining = self.size
        while remaining > 0:
            chunk = zeros[:remaining]
            remaining -= len(chunk)
            self.sent += len(chunk)
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _state(server) -> list[str]:
    return [r.id for r in server["pool"].list()]


def _assert_temp_empty(server, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while _temp_bytes(server["temp"], server["pid"]) or any(server["temp"].iterdir()):
        assert time.monotonic() < deadline, f"left in the server's temp folder: " \
            f"{sorted(p.name for p in server['temp'].rglob('*'))}"
        time.sleep(0.05)


def _raw_request(server, headers: dict[str, str], body: bytes = b"") -> socket.socket:
    """A POST /api/adapters written by hand on a socket, so a test controls when (and whether)
    the body follows the headers."""
    port = int(server["url"].rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(f"POST /api/adapters HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body)
    return sock


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_missing_or_wrong_token_refused_before_the_body(server):
    """401 comes back while the client is still sending: the body is not read, not stored."""
    before = _state(server)
    sock = _raw_request(server, {"Content-Type": MULTIPART, "Transfer-Encoding": "chunked"})
    with sock:
        sock.settimeout(5)
        try:
            answer = sock.recv(4096)
        except TimeoutError:
            pytest.fail("no answer to a token-less upload whose body has not been sent yet")
    assert answer.startswith(b"HTTP/1.1 401")
    for headers in ({}, {"Authorization": "Bearer apw_wrong"}):
        body = _LazyForm(64 * 1024 * 1024)
        with _TempWatch(server) as watch:
            response = httpx.post(server["url"] + "/api/adapters", content=body, timeout=60,
                                  headers={"Content-Type": MULTIPART, **headers})
        assert response.status_code == 401
        assert body.sent < 16 * 1024 * 1024, f"{body.sent} bytes of the body were taken"
        assert watch.peak == 0
    _assert_temp_empty(server)
    assert _state(server) == before


def test_chunked_upload_over_the_limit_stops_at_the_limit(server):
    """Without Content-Length the limit is enforced while counting: 413, at most the limit in
    the temp folder at any instant, nothing left there afterwards, the pool unchanged."""
    before = _state(server)
    body = _LazyForm(20 * 1024 * 1024)
    with _TempWatch(server) as watch:
        response = httpx.post(server["url"] + "/api/adapters", content=body, timeout=60,
                              headers={"Content-Type": MULTIPART,
                                       "Authorization": f"Bearer {server['token']}"})
    assert watch.peak <= LIMIT + SLACK, f"peak temp use {watch.peak} bytes"
    assert body.sent < 16 * 1024 * 1024, f"{body.sent} bytes of the body were taken"
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    _assert_temp_empty(server)
    assert _state(server) == before


def test_declared_length_over_the_limit_refused_before_the_body(server):
    sock = _raw_request(server, {"Content-Type": MULTIPART, "Content-Length": str(100 * 2**20),
                                 "Authorization": f"Bearer {server['token']}"})
    with sock:
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_temp_folder_cleaned_on_every_outcome(server, tmp_path):
    """201, 400 (bad multipart, rejected weights, missing field), 409 and a client that goes away
    mid-body: the server's temp folder is empty after each, and only the 201 changes the pool."""
    folder = _incoming(server, tmp_path, 5e-3)
    remote = _remote(server, token=server["token"])
    before = _state(server)
    record = remote.add(folder)
    _assert_temp_empty(server)
    assert _state(server) == before + [record.id]
    with pytest.raises(DuplicateAdapterError):
        remote.add(folder)
    _assert_temp_empty(server)
    headers = {"Authorization": f"Bearer {server['token']}"}
    files = {name: (name, (folder / stored).read_bytes()) for name, stored in (
        ("adapter_config", "adapter_config.json"), ("adapter_model", "adapter_model.safetensors"),
        ("metadata", "adapterpool.json"))}
    rejected = dict(files, adapter_model=("adapter_model.safetensors", b"not safetensors"))
    response = httpx.post(server["url"] + "/api/adapters", headers=headers, files=rejected)
    assert response.status_code == 400
    _assert_temp_empty(server)
    missing = {k: v for k, v in files.items() if k != "metadata"}
    response = httpx.post(server["url"] + "/api/adapters", headers=headers, files=missing)
    assert response.status_code == 422 and "metadata" in response.text
    _assert_temp_empty(server)
    response = httpx.post(server["url"] + "/api/adapters", content=b"--x\r\ngarbage",
                          headers={**headers, "Content-Type": "multipart/form-data; boundary=y"})
    assert response.status_code == 400
    _assert_temp_empty(server)
    sock = _raw_request(server, {**headers, "Content-Type": MULTIPART,
                                 "Transfer-Encoding": "chunked"})
    with sock:
        sock.sendall(_chunk(b"".join(list(iter(_LazyForm(LIMIT // 2)))[:-1])))
        time.sleep(0.5)
    _assert_temp_empty(server)
    assert _state(server) == before + [record.id]


def test_slow_upload_does_not_stall_reads(server):
    """An upload whose client pauses mid-body holds no thread and no lock: reads answer at once."""
    before = _state(server)
    sock = _raw_request(server, {"Content-Type": MULTIPART, "Transfer-Encoding": "chunked",
                                 "Authorization": f"Bearer {server['token']}"})
    with sock:
        sock.sendall(_chunk(next(iter(_LazyForm(1)))))
        for _ in range(3):
            for path in ("/api/info", "/api/adapters"):
                start = time.monotonic()
                assert httpx.get(server["url"] + path, timeout=5).status_code == 200
                assert time.monotonic() - start < 1.0, f"GET {path} stalled behind the upload"
            time.sleep(0.5)
    _assert_temp_empty(server)
    assert _state(server) == before


def test_blocking_add_runs_off_the_event_loop(tiny_pool, tmp_path, monkeypatch):
    """While an add is busy (made to take 3 s here), reads still answer within a second: the
    add runs in a worker thread, not on the event loop. An in-process server, so the add can be
    slowed down."""
    import uvicorn

    from adapterpool.server import app as app_module

    entered = threading.Event()

    class SlowPool(AdapterPool):
        def add(self, *args, **kwargs):
            entered.set()
            time.sleep(3)
            return super().add(*args, **kwargs)

    shutil.copytree(tiny_pool.path, tmp_path / "pool")
    token = create_token(AdapterPool(tmp_path / "pool"), "bob")
    monkeypatch.setattr(app_module, "AdapterPool", SlowPool)
    port = _free_port()
    config = uvicorn.Config(app_module.create_app(tmp_path / "pool"), host="127.0.0.1",
                            port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert time.monotonic() < deadline, "in-process server did not start"
            time.sleep(0.05)
        served = {"url": url, "pool": AdapterPool(tmp_path / "pool"), "cache": tmp_path / "cache"}
        folder = _incoming(served, tmp_path, 6e-3)
        result: dict = {}
        upload = threading.Thread(target=lambda: result.update(
            record=_remote(served, token=token).add(folder)))
        upload.start()
        assert entered.wait(30)
        for path in ("/api/info", "/api/adapters"):
            start = time.monotonic()
            assert httpx.get(url + path, timeout=5).status_code == 200
            assert time.monotonic() - start < 1.0, f"GET {path} waited for the add"
        upload.join(30)
        assert result["record"].id in {r.id for r in served["pool"].list()}
    finally:
        uv.should_exit = True
        thread.join(20)
