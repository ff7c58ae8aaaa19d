"""A pool served over HTTP, with the local pool's interface: list, get, sample, adapter_dir
(downloaded into a local cache keyed by sha256 and verified), add and remove (with a token)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import httpx
from platformdirs import user_cache_dir

from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META
from .catalog import AdapterRecord
from .checks import AdapterRejected, check_files, check_id, check_metadata
from .store import DuplicateAdapterError, PoolError, seeded_sample, sha256_file


class RemotePool:
    def __init__(self, url: str, *, token: str | None = None, cache_dir: str | Path | None = None,
                 timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.cache = Path(cache_dir or Path(user_cache_dir("adapterpool")) / "remote")
        self.client = httpx.Client(base_url=self.url, timeout=timeout)
        self.info = self._json("GET", "/api/info")

    def _json(self, method: str, path: str, **kwargs):
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PoolError(f"pool server {self.url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if response.status_code == 409:
                raise DuplicateAdapterError(f"{self.url}: {detail}", "")
            if response.status_code == 400:
                raise AdapterRejected(f"{self.url} refused the adapter: {detail}")
            raise PoolError(f"{self.url} answered {response.status_code}: {detail}")
        return response.json()

    @property
    def base_model(self) -> str:
        return self.info["base_model"]

    def list(self) -> list[AdapterRecord]:
        return [AdapterRecord(**r) for r in self._json("GET", "/api/adapters")]

    def get(self, adapter_id: str) -> AdapterRecord:
        check_id(adapter_id)
        return AdapterRecord(**self._json("GET", f"/api/adapters/{adapter_id}"))

    def sample(self, n: int, seed: int) -> list[AdapterRecord]:
        return seeded_sample(self.list(), n, seed)

    def adapter_dir(self, adapter_id: str) -> Path:
        """The adapter in the local cache (by sha256); downloaded and verified when missing."""
        record = self.get(adapter_id)
        folder = self.cache / record.sha256
        weights = folder / ADAPTER_WEIGHTS
        if weights.is_file() and sha256_file(weights) == record.sha256:
            return folder
        self.cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.cache, prefix=".download-"))
        try:
            for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META):
                url = f"/api/adapters/{record.id}/files/{name}"
                with self.client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise PoolError(
                            f"{self.url}: download of {name} failed ({response.status_code})"
                        )
                    with open(staging / name, "wb") as handle:
                        for chunk in response.iter_bytes():
                            handle.write(chunk)
            if sha256_file(staging / ADAPTER_WEIGHTS) != record.sha256:
                raise PoolError(f"{self.url}: downloaded weights of {record.id} fail their sha256")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def add(self, adapter_dir: str | Path, *, meta: dict | None = None,
            parent_id: str | None = None) -> AdapterRecord:
        """Upload an adapter; the server re-runs every check."""
        if not self.token:
            raise PoolError(f"contributing to {self.url} needs a write token (--token)")
        source = Path(adapter_dir)
        check_files(source)  # refuse pickles before anything leaves this machine
        if meta is None:
            meta = json.loads((source / ADAPTERPOOL_META).read_text())
        check_metadata(meta)
        with (
            open(source / ADAPTER_CONFIG, "rb") as config,
            open(source / ADAPTER_WEIGHTS, "rb") as weights,
        ):
            files = {
                "adapter_config": (ADAPTER_CONFIG, config, "application/json"),
                "adapter_model": (ADAPTER_WEIGHTS, weights, "application/octet-stream"),
                "metadata": (ADAPTERPOOL_META, json.dumps(meta).encode(), "application/json"),
            }
            data = {"parent_id": parent_id} if parent_id else {}
            return AdapterRecord(**self._json(
                "POST", "/api/adapters", files=files, data=data,
                headers={"Authorization": f"Bearer {self.token}"}))

    def remove(self, adapter_id: str) -> AdapterRecord:
        check_id(adapter_id)
        return AdapterRecord(**self._json(
            "DELETE", f"/api/adapters/{adapter_id}",
            headers={"Authorization": f"Bearer {self.token}"} if self.token else {}))
