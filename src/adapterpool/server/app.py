"""The pool over HTTP (FastAPI): anyone may list, search and download; contributing and removing
need a write token. Uploads pass every check a local add does, inside the same staged add."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fastapi import FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from .. import __version__
from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META
from ..pool.checks import AdapterRejected, check_id
from ..pool.store import AdapterPool, DuplicateAdapterError, PoolError
from ..pool.tokens import token_owner

DOWNLOADABLE = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META)
DEFAULT_MAX_UPLOAD = 256 * 1024 * 1024


def create_app(pool_path: str | Path, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> FastAPI:
    pool = AdapterPool(pool_path)
    app = FastAPI(title="adapterpool", version=__version__)

    @app.middleware("http")
    async def limit_request_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and int(length) > max_upload_bytes:
            return JSONResponse(
                {"detail": f"request of {int(length)} bytes exceeds the {max_upload_bytes}-byte limit"},
                status_code=413,
            )
        return await call_next(request)

    def require_writer(authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "a write token is required: Authorization: Bearer <token>")
        owner = token_owner(pool, authorization.removeprefix("Bearer ").strip())
        if owner is None:
            raise HTTPException(401, "invalid write token")
        return owner

    def record_or_404(adapter_id: str):
        try:
            check_id(adapter_id)
            return pool.get(adapter_id)
        except (AdapterRejected, PoolError) as exc:
            raise HTTPException(404, str(exc)) from exc

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
    def download(adapter_id: str, name: str):
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

    @app.post("/api/adapters", status_code=201)
    async def contribute(
        adapter_config: UploadFile = File(...),
        adapter_model: UploadFile = File(...),
        metadata: UploadFile = File(...),
        parent_id: str | None = Form(None),
        authorization: str | None = Header(None),
    ) -> dict:
        owner = require_writer(authorization)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            total = 0
            for upload, name in ((adapter_config, ADAPTER_CONFIG), (adapter_model, ADAPTER_WEIGHTS),
                                 (metadata, ADAPTERPOOL_META)):
                with open(folder / name, "wb") as handle:
                    while chunk := await upload.read(1 << 20):
                        total += len(chunk)
                        if total > max_upload_bytes:
                            raise HTTPException(413, f"upload exceeds {max_upload_bytes} bytes")
                        handle.write(chunk)
            try:
                meta = json.loads((folder / ADAPTERPOOL_META).read_text())
                meta["contributed_by"] = owner
                record = pool.add(folder, meta=meta, parent_id=parent_id or None)
            except DuplicateAdapterError as exc:
                raise HTTPException(409, str(exc)) from exc
            except (AdapterRejected, PoolError, ValueError) as exc:
                raise HTTPException(400, str(exc)) from exc
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
