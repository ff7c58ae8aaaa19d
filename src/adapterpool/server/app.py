"""The pool over HTTP (FastAPI): anyone may list, search and download; contributing and removing
need a write token. Uploads pass every check a local add does, inside the same staged add.

Uploads are bounded before they cost anything: the token is checked before a byte of the body is
read, the body is counted while it streams (with or without Content-Length) and refused at the
limit, and parts are written straight into one per-request temp folder, so at most the limit ever
reaches the disk and the folder is removed on every path. The blocking add (hashing, fsync, the
shape check that builds a model) runs in worker threads so reads stay responsive meanwhile."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .. import __version__
from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META, TASK_EMBEDDING
from ..pool.catalog import AdapterRecord
from ..pool.checks import AdapterRejected, check_id
from ..pool.storage import LocalStorage
from ..pool.store import AdapterPool, DuplicateAdapterError, PoolError
from ..pool.tokens import token_owner
from .catalog_view import CatalogView, Snapshot
from .files import BigChunkFileResponse, VerifiedFiles, etag_matches

DOWNLOADABLE = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META)
DEFAULT_MAX_UPLOAD = 256 * 1024 * 1024
# Multipart form of POST /api/adapters: file fields and the names they are stored under.
UPLOAD_FILES = {"adapter_config": ADAPTER_CONFIG, "adapter_model": ADAPTER_WEIGHTS,
                "metadata": ADAPTERPOOL_META}
OPTIONAL_FILES = {"task_embedding": TASK_EMBEDDING}  # the task summary, checked by the add
RETRY_AFTER_SECONDS = 2
MAX_FIELD_BYTES = 1024  # parent_id: an adapter id, never long
# A refusal sent before the body is read says "close": otherwise uvicorn would drain (read and
# discard) the rest of the body to keep the connection alive, which is the cost being refused.
CLOSE = {"Connection": "close"}

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]],
                    Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]


class ContentLengthLimit:
    """Refuse (413) a request whose declared Content-Length exceeds the limit before reading it.

    A plain ASGI middleware: it only looks at headers, and leaves the body stream untouched for
    the route, which enforces the same limit while reading (chunked bodies declare no length).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "http":
            refusal = None
            for name, value in scope["headers"]:
                if name.lower() != b"content-length":
                    continue
                try:
                    length = int(value)
                except ValueError:
                    refusal = JSONResponse({"detail": "invalid Content-Length"}, 400, headers=CLOSE)
                    break
                if length > self.max_bytes:
                    refusal = JSONResponse(
                        {"detail": f"request of {length} bytes exceeds the "
                                   f"{self.max_bytes}-byte limit"}, 413, headers=CLOSE)
                break
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _UploadWriter:
    """Callbacks for python-multipart's streaming parser: each known file part goes straight into
    its file in ``folder`` (no spooling elsewhere), ``parent_id`` is kept in memory (bounded),
    other fields are dropped. File writes are small chunks into the page cache, cheap enough to
    do on the event loop."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: set[str] = set()
        self.fields: dict[str, bytearray] = {}
        self.ended = False
        self._name = b""
        self._value = b""
        self._disposition = b""
        self._field: str | None = None
        self._handle: BinaryIO | None = None
        self._buffer: bytearray | None = None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self) -> None:
        self._disposition = b""
        self._field = None

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        if self._name.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._name = self._value = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise HTTPException(400, "a multipart part has no name", headers=CLOSE)
        field = options[b"name"].decode("latin-1")
        if field in self.seen:
            raise HTTPException(400, f"field {field!r} sent twice", headers=CLOSE)
        self.seen.add(field)
        self._field = field
        if field in UPLOAD_FILES or field in OPTIONAL_FILES:
            stored = UPLOAD_FILES.get(field) or OPTIONAL_FILES[field]
            self._handle = open(self.folder / stored, "wb")  # noqa: SIM115
        elif field == "parent_id":
            self._buffer = self.fields.setdefault(field, bytearray())

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._handle is not None:
            self._handle.write(data[start:end])
        elif self._buffer is not None:
            self._buffer += data[start:end]
            if len(self._buffer) > MAX_FIELD_BYTES:
                raise HTTPException(400, f"field {self._field!r} is too long", headers=CLOSE)

    def part_end(self) -> None:
        self.close()
        self._buffer = None

    def end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def _receive_upload(request: Request, folder: Path, max_bytes: int) -> dict[str, str]:
    """Stream the multipart body into ``folder``, counting bytes and stopping at ``max_bytes``
    (413) whether or not Content-Length was sent; returns the text fields."""
    _, options = parse_options_header(request.headers.get("content-type"))
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data" or b"boundary" not in options:
        raise HTTPException(415, "expected multipart/form-data with the fields "
                                 f"{', '.join(UPLOAD_FILES)} (files), task_embedding (file, "
                                 "optional) and parent_id (optional)",
                            headers=CLOSE)
    writer = _UploadWriter(folder)
    try:
        parser = MultipartParser(options[b"boundary"], writer.callbacks())
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise HTTPException(413, f"upload exceeds the {max_bytes}-byte limit",
                                    headers=CLOSE)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}", headers=CLOSE) from exc
    except ClientDisconnect as exc:  # nobody to answer; the caller's cleanup still runs
        raise HTTPException(400, "client disconnected during the upload") from exc
    finally:
        writer.close()
    if not writer.ended:
        raise HTTPException(400, "multipart body ended before its closing boundary")
    missing = [field for field in UPLOAD_FILES if field not in writer.seen]
    if missing:
        raise HTTPException(422, f"missing form fields: {', '.join(missing)}")
    try:
        return {k: v.decode() for k, v in writer.fields.items()}
    except UnicodeDecodeError as exc:
        raise HTTPException(400, "form fields must be UTF-8") from exc


class TempBudget:
    """Bytes of temp disk all uploads in flight may hold together (``max_bytes``).

    An upload reserves, before a byte of its body is read, what it may write: its declared
    Content-Length, or the per-upload limit when it declares none (chunked); the body is cut at
    that reservation while it streams. A reservation that does not fit is refused (503 with
    Retry-After); it is returned when the upload's temp folder is removed."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.reserved = 0
        self.peak = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int) -> bool:
        with self._lock:
            if self.reserved + nbytes > self.max_bytes:
                return False
            self.reserved += nbytes
            self.peak = max(self.peak, self.reserved)
            return True

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.reserved -= nbytes


def _json_response(body: bytes, etag: str | None = None, status: int = 200) -> Response:
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"} if etag else None
    return Response(body, status, headers=headers, media_type="application/json")


def create_app(pool_path: str | Path, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               max_concurrent_adds: int = 4, max_temp_bytes: int | None = None) -> FastAPI:
    """The app; ``max_concurrent_adds`` bounds the adds running at once in worker threads (their
    own limiter, so uploads never take the threads the synchronous read routes run in);
    ``max_temp_bytes`` bounds the temp disk of all uploads in flight together (default: four
    uploads at the limit)."""
    pool = AdapterPool(pool_path)
    view = CatalogView(pool)
    files = VerifiedFiles(pool.path)
    budget = TempBudget(max_temp_bytes if max_temp_bytes is not None else 4 * max_upload_bytes)
    app = FastAPI(title="adapterpool", version=__version__)
    app.add_middleware(ContentLengthLimit, max_bytes=max_upload_bytes)
    app.state.pool, app.state.view, app.state.files, app.state.temp_budget = (
        pool, view, files, budget)
    add_limiter = anyio.CapacityLimiter(max_concurrent_adds)

    def require_writer(authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "a write token is required: Authorization: Bearer <token>",
                                headers=CLOSE)
        owner = token_owner(pool, authorization.removeprefix("Bearer ").strip())
        if owner is None:
            raise HTTPException(401, "invalid write token", headers=CLOSE)
        return owner

    def record_or_404(adapter_id: str, snapshot: Snapshot | None = None) -> AdapterRecord:
        try:
            check_id(adapter_id)
        except AdapterRejected as exc:
            raise HTTPException(404, str(exc)) from exc
        record = (snapshot or view.current()).by_id.get(adapter_id)
        if record is None:
            raise HTTPException(404, f"no adapter {adapter_id!r} in pool {pool.path}")
        return record

    def add_upload(folder: Path, owner: str, parent_id: str | None) -> AdapterRecord:
        """The checked, staged add of an uploaded folder (blocking: run in a worker thread)."""
        try:
            meta = json.loads((folder / ADAPTERPOOL_META).read_text())
            if not isinstance(meta, dict):
                raise HTTPException(400, f"{ADAPTERPOOL_META} must hold a JSON object")
            meta["contributed_by"] = owner
            return pool.add(folder, meta=meta, parent_id=parent_id or None)
        except DuplicateAdapterError as exc:
            raise HTTPException(409, str(exc)) from exc
        except (AdapterRejected, PoolError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc

    # The read routes are coroutines: what they do is in memory (the catalog view) or a stat, so
    # they answer on the event loop without a worker-thread hop each; hashing a file (a cache
    # miss) and storage other than the local folder go to a worker thread.
    @app.get("/api/info")
    async def info() -> dict:
        return {"adapterpool_version": __version__, "base_model": pool.base_model,
                "fingerprint": pool.info.get("fingerprint"),
                "adapters": len(view.current().records)}

    @app.get("/api/adapters")
    async def list_adapters(task: str | None = None, kind: str | None = None,
                      label: str | None = None,
                      if_none_match: str | None = Header(None)) -> Response:
        snapshot = view.current()
        if not (task or kind or label):
            if etag_matches(if_none_match, snapshot.etag):
                return Response(status_code=304, headers={"ETag": f'"{snapshot.etag}"'})
            return _json_response(snapshot.list_json, snapshot.etag)
        records = snapshot.records
        if task:
            records = [r for r in records if task.lower() in r.task_name.lower()]
        if kind:
            records = [r for r in records if r.task_kind == kind]
        if label:
            records = [r for r in records if label in r.label_names]
        return _json_response(b"[" + b", ".join(snapshot.json_of[r.id] for r in records) + b"]")

    @app.get("/api/adapters/{adapter_id}")
    async def show(adapter_id: str) -> Response:
        snapshot = view.current()
        record = record_or_404(adapter_id, snapshot)
        return _json_response(snapshot.json_of[record.id], record.sha256)

    @app.get("/api/task-summaries")
    async def task_summaries() -> dict:
        """The catalog's task-summary rows by adapter id (sha256, source, n_texts, dims); the
        files themselves: ``/api/adapters/ID/files/task_embedding.safetensors``."""
        return view.current().summaries

    def located(record: AdapterRecord, name: str, expected: str | None,
                cached_only: bool) -> tuple[Path, str, os.stat_result] | None:
        """The file's path, sha256 and stat, refused (500) when it differs from ``expected``;
        with ``cached_only``, None where that needs more than a stat (a hash, a download)."""
        if cached_only and not isinstance(pool.storage, LocalStorage):
            return None
        folder = pool.storage.local_dir(record.id, record.sha256)
        if folder is None or not (folder / name).is_file():
            raise HTTPException(500 if name == ADAPTER_WEIGHTS else 404,
                                f"adapter {record.id} has no {name} on disk; "
                                "run `adapterpool pool verify`")
        try:
            found = files.cached(folder / name) if cached_only else files.sha256(folder / name)
        except FileNotFoundError as exc:  # removed meanwhile
            raise HTTPException(404, f"adapter {record.id} has no {name}") from exc
        if found is None:
            return None
        sha, stat = found
        if expected is not None and sha != expected:
            raise HTTPException(500, f"adapter {record.id}: {name} altered on disk (sha256 "
                                     "differs from the catalog); run `adapterpool pool verify`")
        return folder / name, sha, stat

    @app.get("/api/adapters/{adapter_id}/files/{name}")
    async def download(adapter_id: str, name: str,
                       if_none_match: str | None = Header(None)) -> Response:
        """The file, verified against its sha256 (the weights: the catalog's; the task summary:
        its row's; the JSON files: their own, as ETag); a matching If-None-Match gets 304."""
        snapshot = view.current()
        record = record_or_404(adapter_id, snapshot)
        summary = snapshot.summaries.get(record.id)
        servable = DOWNLOADABLE + ((TASK_EMBEDDING,) if summary else ())
        if name not in servable:
            raise HTTPException(404, f"no file {name!r}; files: {', '.join(servable)}")
        expected = {ADAPTER_WEIGHTS: record.sha256,
                    TASK_EMBEDDING: summary["sha256"] if summary else None}.get(name)
        headers = {"X-Adapter-SHA256": record.sha256, "Cache-Control": "no-cache"}
        if expected is not None and etag_matches(if_none_match, expected):
            return Response(status_code=304, headers={**headers, "ETag": f'"{expected}"'})
        found = located(record, name, expected, cached_only=True)
        if found is None:
            found = await run_in_threadpool(located, record, name, expected, False)
        path, sha, stat = found
        if etag_matches(if_none_match, sha):
            return Response(status_code=304, headers={**headers, "ETag": f'"{sha}"'})
        return BigChunkFileResponse(path, stat_result=stat, headers={**headers, "ETag": f'"{sha}"'})

    upload_form = {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": list(UPLOAD_FILES), "properties": {
            **{field: {"type": "string", "format": "binary"}
               for field in {**UPLOAD_FILES, **OPTIONAL_FILES}},
            "parent_id": {"type": "string"}}}}}}}

    @app.post("/api/adapters", status_code=201, openapi_extra=upload_form)
    async def contribute(request: Request) -> dict:
        """Token first (nothing read yet), then a share of the server's temp budget, then the
        bounded streamed body, then the add in a worker thread; the per-request temp folder
        and the share go on every path."""
        owner = await run_in_threadpool(require_writer, request.headers.get("authorization"))
        declared = request.headers.get("content-length")
        share = min(int(declared), max_upload_bytes) if declared else max_upload_bytes
        if not budget.reserve(share):
            raise HTTPException(
                503, f"the server's temp space for uploads ({budget.max_bytes} bytes) is in use "
                     "by other uploads; retry shortly",
                headers={**CLOSE, "Retry-After": str(RETRY_AFTER_SECONDS)})
        try:
            folder = Path(tempfile.mkdtemp(prefix="adapterpool-upload-"))
            try:
                fields = await _receive_upload(request, folder, share)
                record = await anyio.to_thread.run_sync(
                    add_upload, folder, owner, fields.get("parent_id"), limiter=add_limiter)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            budget.release(share)
        return record.as_json()

    @app.delete("/api/adapters/{adapter_id}")
    def remove(adapter_id: str, authorization: str | None = Header(None)) -> dict:
        require_writer(authorization)
        record_or_404(adapter_id)
        try:
            return pool.remove(adapter_id).as_json()
        except PoolError as exc:  # removed meanwhile
            raise HTTPException(404, str(exc)) from exc

    from .pages import add_pages

    add_pages(app)
    return app


def serve(pool_path: str | Path, *, host: str = "127.0.0.1", port: int = 8750,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_temp_bytes: int | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(pool_path, max_upload_bytes=max_upload_bytes,
                           max_temp_bytes=max_temp_bytes), host=host, port=port, log_level="info")
