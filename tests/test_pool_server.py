"""The pool server over real HTTP on 127.0.0.1: reads for all, writes with a token, every check
re-run on uploads, size limits, and the loop drawing from a remote pool."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    process = subprocess.Popen(
        [sys.executable, "-m", "adapterpool.cli", "serve", str(pool.path), "--port", str(port),
         "--max-upload-mb", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/info", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("server did not start: " + process.stderr.read()[-2000:])
    yield {"url": url, "token": token, "pool": pool, "cache": root / "cache"}
    process.terminate()
    process.wait(timeout=20)


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
        "adapter_model": ("adapter_model.safetensors", (folder / "adapter_model.safetensors").read_bytes()),
        "metadata": ("adapterpool.json", meta)})
    assert response.status_code == 400 and "roberta-base" in response.json()["detail"]
    big = httpx.post(server["url"] + "/api/adapters", headers=headers, files={
        "adapter_config": ("adapter_config.json", config),
        "adapter_model": ("adapter_model.safetensors", b"\0" * (3 * 1024 * 1024)),
        "metadata": ("adapterpool.json", meta)})
    assert big.status_code == 413
    assert httpx.get(server["url"] + "/api/adapters/..%2F..%2Fetc/files/passwd").status_code == 404
    record_id = before[0]
    assert httpx.get(f"{server['url']}/api/adapters/{record_id}/files/catalog.sqlite").status_code == 404
    assert not marker.exists()
    assert [r.id for r in server["pool"].list()] == before


def test_client_refuses_to_upload_pickles(server, tmp_path):
    folder = _incoming(server, tmp_path, 4e-3)
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(AdapterRejected, match="pickle-based weights are refused"):
        _remote(server, token=server["token"]).add(folder)


def test_rank_and_adapt_from_a_remote_pool(server, tmp_path):
    from adapterpool import adapt, load_task
    from adapterpool.training import TrainConfig

    task = load_task("builtin:movie-sentiment", max_train=48, max_eval=24)
    remote = _remote(server, token=server["token"])
    before = len(remote.list())
    report = adapt(task, remote, metric="leep", subset=2, max_tries=1, threshold=0.0, epochs=1,
                   train_config=TrainConfig(epochs=1, max_length=32, evals_per_epoch=1),
                   contribute=True, out_dir=tmp_path / "run", max_samples=32,
                   show_progress=False, measure_energy=False).report
    assert report["outcome"] == "transfer"
    assert len(remote.list()) == before + 1
    assert remote.get(report["contributed_adapter_id"]).parent_id == report["attempts"][0]["adapter_id"]
