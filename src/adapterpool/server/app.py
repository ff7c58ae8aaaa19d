"""The pool over HTTP (FastAPI): anyone may list, search and download; contributing and removing
need a write token. Uploads pass every check a local add does, inside the same staged add.

Uploads are bounded before they cost anything: the token is checked before a byte of the body is
read, the body is counted while it streams (with or without Content-Length) and refused at the
limit, and parts are written straight into one per-request temp folder, so at most the limit ever
reaches the disk and the folder is removed on every path. The blocking add (hashing, fsync, the
shape check that builds a model) runs in worker threads so reads stay responsive meanwhile."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .. import __version__
from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META
from ..pool.catalog import AdapterRecord
from ..pool.checks import AdapterRejected, check_id
from ..pool.store import AdapterPool, DuplicateAdapterError, PoolError
from ..pool.tokens import token_owner

DOWNLOADABLE = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META)
DEFAULT_MAX_UPLOAD = 256 * 1024 * 1024
# Multipart form of POST /api/adapters: file fields and the names they are stored under.
UPLOAD_FILES = {"adapter_config": ADAPTER_CONFIG, "adapter_model": ADAPTER_WEIGHTS,
                "metadata": ADAPTERPOOL_META}
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
        if field in UPLOAD_FILES:
            self._handle = open(self.folder / UPLOAD_FILES[field], "wb")  # noqa: SIM115
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
                                 f"{', '.join(UPLOAD_FILES)} (files) and parent_id (optional)",
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


def create_app(pool_path: str | Path, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               max_concurrent_adds: int = 4) -> FastAPI:
    """The app; ``max_concurrent_adds`` bounds the adds running at once in worker threads (their
    own limiter, so uploads never take the threads the synchronous read routes run in)."""
    pool = AdapterPool(pool_path)
    app = FastAPI(title="adapterpool", version=__version__)
    app.add_middleware(ContentLengthLimit, max_bytes=max_upload_bytes)
    add_limiter = anyio.CapacityLimiter(max_concurrent_adds)

    def require_writer(authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "a write token is required: Authorization: Bearer <token>",
                                headers=CLOSE)
        owner = token_owner(pool, authorization.removeprefix("Bearer ").strip())
        if owner is None:
            raise HTTPException(401, "invalid write token", headers=CLOSE)
        return owner

    def record_or_404(adapter_id: str) -> AdapterRecord:
        try:
            check_id(adapter_id)
            return pool.get(adapter_id)
        except (AdapterRejected, PoolError) as exc:
            raise HTTPException(404, str(exc)) from exc

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

    @app.get("/api/info")
    def info() -> dict:
        return {"adapterpool_version": __version__, "base_model": pool.base_model,
                "fingerprint": pool.info.get("fingerprint"), "adapters": len(pool.list())}

    @app.get("/api/adapters")
    def list_adapters(task: str | None = None, kind: str | None = None,
                      label: str | None = None) -> list[dict]:
        records = pool.list()
        if task:
            records = [r for r in records if task.lower() in r.task_name.lower()]
        if kind:
            records = [r for r in records if r.task_kind == kind]
        if label:
            records = [r for r in records if label in r.label_names]
        return [r.as_json() for r in records]

    @app.get("/api/adapters/{adapter_id}")
    def show(adapter_id: str) -> dict:
        return record_or_404(adapter_id).as_json()

    @app.get("/api/adapters/{adapter_id}/files/{name}")
    def download(adapter_id: str, name: str) -> FileResponse:
        record = record_or_404(adapter_id)
        if name not in DOWNLOADABLE:
            raise HTTPException(404, f"no file {name!r}; files: {', '.join(DOWNLOADABLE)}")
        try:
            folder = pool.adapter_dir(record.id)
        except PoolError as exc:
            raise HTTPException(500, str(exc)) from exc
        if not (folder / name).is_file():
            raise HTTPException(404, f"adapter {adapter_id} has no {name}")
        return FileResponse(folder / name, headers={"X-Adapter-SHA256": record.sha256})

    upload_form = {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": list(UPLOAD_FILES), "properties": {
            **{field: {"type": "string", "format": "binary"} for field in UPLOAD_FILES},
            "parent_id": {"type": "string"}}}}}}}

    @app.post("/api/adapters", status_code=201, openapi_extra=upload_form)
    async def contribute(request: Request) -> dict:
        """Token first (nothing read yet), then the bounded streamed body, then the add in a
        worker thread; the per-request temp folder goes on every path."""
        owner = await run_in_threadpool(require_writer, request.headers.get("authorization"))
        folder = Path(tempfile.mkdtemp(prefix="adapterpool-upload-"))
        try:
            fields = await _receive_upload(request, folder, max_upload_bytes)
            record = await anyio.to_thread.run_sync(
                add_upload, folder, owner, fields.get("parent_id"), limiter=add_limiter)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return record.as_json()

    @app.delete("/api/adapters/{adapter_id}")
    def remove(adapter_id: str, authorization: str | None = Header(None)) -> dict:
        require_writer(authorization)
        record_or_404(adapter_id)
        return pool.remove(adapter_id).as_json()

    return app


def serve(pool_path: str | Path, *, host: str = "127.0.0.1", port: int = 8750,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> None:
    import uvicorn

    uvicorn.run(create_app(pool_path, max_upload_bytes=max_upload_bytes), host=host, port=port,
                log_level="info")
