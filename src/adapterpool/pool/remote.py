"""A pool served over HTTP, with the local pool's interface: list, get, sample, adapter_dir
(downloaded into a local cache keyed by sha256 and verified), task summaries (the same), add and
remove (with a token), and a client-side verify of everything the server serves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import httpx
from platformdirs import user_cache_dir

from ..errors import TaskSummaryError
from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META, TASK_EMBEDDING
from .catalog import AdapterRecord
from .checks import AdapterRejected, check_files, check_id, check_metadata
from .store import DuplicateAdapterError, PoolError, seeded_sample, sha256_file
from .task_summaries import SummaryReading, check_summary_bytes, sha256_bytes


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

    def summary_rows(self) -> dict[str, dict]:
        """The served task-summary rows by adapter id (sha256, source, n_texts, dims)."""
        return self._json("GET", "/api/task-summaries")

    def _fetch(self, adapter_id: str, name: str) -> bytes:
        response = self.client.get(f"/api/adapters/{adapter_id}/files/{name}")
        if response.status_code != 200:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise PoolError(f"{self.url}: download of {adapter_id}/{name} failed "
                            f"({response.status_code}: {detail})")
        return response.content

    def summary_bytes(self, adapter_id: str, row: dict | None = None) -> bytes | None:
        """The task summary file of ``adapter_id`` as the server records it (sha256 checked,
        cached locally by sha256), None when it has none."""
        if row is None:
            row = self.summary_rows().get(adapter_id)
            if row is None:
                return None
        cached = self.cache / "summaries" / f"{row['sha256']}.safetensors"
        if cached.is_file():
            data = cached.read_bytes()
            if sha256_bytes(data) == row["sha256"]:
                return data
        data = self._fetch(adapter_id, TASK_EMBEDDING)
        if sha256_bytes(data) != row["sha256"]:
            raise TaskSummaryError(f"{self.url}: {TASK_EMBEDDING} of {adapter_id} fails its "
                                   "sha256")
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
        return data

    def task_summaries(self, adapter_ids: list[str]) -> SummaryReading:
        """The served task summaries of ``adapter_ids`` (for the prefilter), as a local pool's."""
        rows = self.summary_rows()
        dims = ((self.info.get("fingerprint") or {}).get("config") or {}).get("hidden_size")
        reading = SummaryReading()
        for adapter_id in adapter_ids:
            row = rows.get(adapter_id)
            if row is None:
                reading.missing.append(adapter_id)
                continue
            try:
                reading.summaries[adapter_id] = check_summary_bytes(
                    self.summary_bytes(adapter_id, row), dims)
            except (TaskSummaryError, PoolError, OSError) as exc:
                reading.problems[adapter_id] = str(exc)
        return reading

    def verify(self) -> dict:
        """What a client can check of a served pool: every adapter's weights and task summary,
        as served, against the catalog's sha256 (orphans and leftovers are on the server's disk:
        ``pool verify`` there finds and repairs them)."""
        records = self.list()
        rows = self.summary_rows()
        corrupt, missing, summaries_corrupt = [], [], []
        for record in records:
            response = self.client.get(f"/api/adapters/{record.id}/files/{ADAPTER_WEIGHTS}")
            if response.status_code == 200:
                if hashlib.sha256(response.content).hexdigest() != record.sha256:
                    corrupt.append(record.id)
            elif "altered" in response.text:  # the server's own check refused to send it
                corrupt.append(record.id)
            else:
                missing.append(record.id)
            if record.id in rows:
                try:
                    data = self._fetch(record.id, TASK_EMBEDDING)
                    if sha256_bytes(data) != rows[record.id]["sha256"]:
                        summaries_corrupt.append(record.id)
                except PoolError:
                    summaries_corrupt.append(record.id)
        return {
            "adapters": len(records), "verified": len(records) - len(corrupt) - len(missing),
            "corrupt": corrupt, "missing_files": missing,
            "task_summaries": len(rows) - len(summaries_corrupt),
            "task_summaries_corrupt": summaries_corrupt,
            "consistent": not (corrupt or missing or summaries_corrupt),
            "served_by": self.url,
        }

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
            if (source / TASK_EMBEDDING).is_file():  # the task summary travels, as in a local add
                files["task_embedding"] = (TASK_EMBEDDING, (source / TASK_EMBEDDING).read_bytes(),
                                           "application/octet-stream")
            data = {"parent_id": parent_id} if parent_id else {}
            return AdapterRecord(**self._json(
                "POST", "/api/adapters", files=files, data=data,
                headers={"Authorization": f"Bearer {self.token}"}))

    def remove(self, adapter_id: str) -> AdapterRecord:
        check_id(adapter_id)
        return AdapterRecord(**self._json(
            "DELETE", f"/api/adapters/{adapter_id}",
            headers={"Authorization": f"Bearer {self.token}"} if self.token else {}))
