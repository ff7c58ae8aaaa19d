"""Fast serving, still verified: file hashes cached by (device, inode, size, mtime) and dropped by
``pool verify``; ETags and 304s; list and show from the catalog alone; and the server-wide cap on
the temp disk of concurrent uploads (503 with Retry-After)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from adapterpool.pool import AdapterPool
from adapterpool.pool.maintenance import verify
from adapterpool.pool.tokens import create_token
from adapterpool.server.app import create_app

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture()
def served(pool_copy):
    app = create_app(pool_copy.path)
    with TestClient(app) as client:
        yield {"client": client, "app": app, "pool": pool_copy}
    app.state.view.close()


def _weights(pool, adapter_id: str) -> Path:
    return pool.path / "adapters" / adapter_id / WEIGHTS


def test_a_download_is_hashed_once_and_revalidated_with_304(served):
    client, files, pool = served["client"], served["app"].state.files, served["pool"]
    record = pool.list()[0]
    url = f"/api/adapters/{record.id}/files/{WEIGHTS}"
    first = client.get(url)
    assert first.status_code == 200 and first.headers["etag"] == f'"{record.sha256}"'
    assert first.content == _weights(pool, record.id).read_bytes()
    assert files.hashed == 1
    assert client.get(url).status_code == 200 and files.hashed == 1  # from the cache
    again = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and files.hashed == 1
    config = client.get(f"/api/adapters/{record.id}/files/adapter_config.json")
    assert config.status_code == 200 and config.headers["etag"]
    assert client.get(f"/api/adapters/{record.id}/files/adapter_config.json", headers={
        "If-None-Match": config.headers["etag"]}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_a_changed_file_is_hashed_again_and_refused(served):
    client, pool = served["client"], served["pool"]
    record = pool.list()[0]
    url = f"/api/adapters/{record.id}/files/{WEIGHTS}"
    assert client.get(url).status_code == 200
    path = _weights(pool, record.id)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))  # a new mtime: the cached hash no longer applies
    response = client.get(url)
    assert response.status_code == 500 and "altered on disk" in response.json()["detail"]


def test_verify_drops_the_cache(served):
    """Bytes changed in place with the mtime put back are invisible to the cache key; a `pool
    verify` run (another process's would do the same) makes the server hash every file again."""
    client, pool, files = served["client"], served["pool"], served["app"].state.files
    record = pool.list()[0]
    url = f"/api/adapters/{record.id}/files/{WEIGHTS}"
    assert client.get(url).status_code == 200
    path = _weights(pool, record.id)
    before = path.stat()
    with open(path, "r+b") as handle:  # same inode, same size
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert client.get(url).status_code == 200  # the cache cannot know
    report = verify(AdapterPool(pool.path))
    assert report["corrupt"] == [record.id]
    hashed = files.hashed
    response = client.get(url)
    assert response.status_code == 500 and files.hashed == hashed + 1


def test_list_and_show_come_from_the_catalog(served):
    """With every adapter's files gone, list, show, info and the pages still answer, and the
    catalog view follows adds made by another process (another connection)."""
    client, pool, files = served["client"], served["pool"], served["app"].state.files
    records = pool.list()
    listed = client.get("/api/adapters")
    assert [r["id"] for r in listed.json()] == [r.id for r in records]
    assert client.get("/api/adapters", headers={
        "If-None-Match": listed.headers["etag"]}).status_code == 304
    source = pool.path / "adapters" / records[0].id
    keep = pool.path.parent / "kept"
    shutil.copytree(source, keep)
    shutil.move(str(pool.path / "adapters"), str(pool.path.parent / "moved-away"))
    (pool.path / "adapters").mkdir()
    try:
        assert [r["id"] for r in client.get("/api/adapters").json()] == [r.id for r in records]
        assert client.get(f"/api/adapters/{records[1].id}").json()["sha256"] == records[1].sha256
        assert client.get("/api/info").json()["adapters"] == len(records)
        assert client.get("/").status_code == 200
        assert client.get(f"/adapters/{records[1].id}").status_code == 200
        assert files.hashed == 0
    finally:
        shutil.rmtree(pool.path / "adapters")
        shutil.move(str(pool.path.parent / "moved-away"), str(pool.path / "adapters"))
    other = AdapterPool(pool.path)  # another catalog connection, as another process has
    removed = other.remove(records[0].id)
    assert removed.id not in {r["id"] for r in client.get("/api/adapters").json()}
    assert client.get(f"/api/adapters/{removed.id}").status_code == 404
    other.add(keep, parent_id=None)
    assert removed.id in {r["id"] for r in client.get("/api/adapters").json()}


# -- the server-wide temp cap ----------------------------------------------------------------

BOUNDARY = "temp-cap-boundary"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uploads_share_a_server_wide_temp_cap(pool_copy, tmp_path):
    """Cap 3 MiB, per-upload limit 2 MiB: a chunked upload in flight holds a 2 MiB share, so a
    second chunked upload is refused at once with 503 and Retry-After (its body unread); once the
    first is gone, the same upload is accepted again. Nothing is left in the temp folder."""
    import uvicorn

    token = create_token(pool_copy, "carol")
    temp = tmp_path / "server-tmp"
    temp.mkdir()
    old_tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(temp)
    import tempfile

    tempfile.tempdir = None  # re-read TMPDIR
    app = create_app(pool_copy.path, max_upload_bytes=2 * 2**20, max_temp_bytes=3 * 2**20)
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    auth = f"Bearer {token}"
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert time.monotonic() < deadline, "in-process server did not start"
            time.sleep(0.05)
        holder = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = (f"POST /api/adapters HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"adapter_model\"; "
                f"filename=\"m\"\r\n\r\n").encode() + b"\0" * 100_000
        holder.sendall(head.encode() + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        deadline = time.monotonic() + 10
        while app.state.temp_budget.reserved == 0:  # the first upload holds its share
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert app.state.temp_budget.reserved == 2 * 2**20

        def second():
            return httpx.post(url + "/api/adapters", timeout=30, headers={
                "Authorization": auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                content=iter([part, f"\r\n--{BOUNDARY}--\r\n".encode()]))

        refused = second()
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "2"
        assert "temp space" in refused.json()["detail"]
        assert app.state.temp_budget.peak <= 3 * 2**20
        holder.close()  # the first upload goes away: its share and its folder go with it
        deadline = time.monotonic() + 10
        while app.state.temp_budget.reserved:
            assert time.monotonic() < deadline, "share not returned"
            time.sleep(0.05)
        again = second()
        assert again.status_code != 503  # accepted into the upload (then refused: no config)
        assert again.status_code == 422 and "adapter_config" in again.text
        assert not any(temp.iterdir())
    finally:
        uv.should_exit = True
        thread.join(20)
        app.state.view.close()
        if old_tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_tmpdir
        tempfile.tempdir = None
