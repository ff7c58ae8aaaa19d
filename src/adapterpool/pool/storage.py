"""Where adapter files live: the pool folder (default), or any fsspec URL (``s3://bucket/pool``
with s3fs, ``memory://`` in tests). The catalog transaction decides what is visible; storage only
publishes, reads and deletes folders, so a crash leaves at worst an orphan for ``verify``."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ..peft_files import ADAPTER_WEIGHTS


def sha256_stream(handle) -> str:
    """The sha256 of a binary stream, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def mtime(path: Path) -> float | None:
    """When ``path`` last changed (epoch seconds), None if it is gone meanwhile."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


class LocalStorage:
    """``POOL/adapters/<id>/``; publishing is one atomic rename on the same filesystem."""

    def __init__(self, pool_path: Path) -> None:
        self.root = pool_path / "adapters"

    def publish(self, staging: Path, adapter_id: str) -> None:
        final = self.root / adapter_id
        if final.exists():  # an orphan from a crashed add of the same id
            shutil.rmtree(final)
        os.rename(staging, final)

    def publish_file(self, staged: Path, adapter_id: str, name: str) -> None:
        """Move one staged file into a published adapter's folder: one atomic rename."""
        folder = self.root / adapter_id
        if not folder.is_dir():
            raise FileNotFoundError(f"adapter folder {folder} does not exist")
        os.replace(staged, folder / name)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read_file(self, adapter_id: str, name: str) -> bytes | None:
        path = self.root / adapter_id / name
        return path.read_bytes() if path.is_file() else None

    def delete_file(self, adapter_id: str, name: str) -> None:
        (self.root / adapter_id / name).unlink(missing_ok=True)

    def local_dir(self, adapter_id: str, sha256: str) -> Path | None:
        folder = self.root / adapter_id
        return folder if (folder / ADAPTER_WEIGHTS).is_file() else None

    def weights_sha(self, adapter_id: str) -> str | None:
        weights = self.root / adapter_id / ADAPTER_WEIGHTS
        if not weights.is_file():
            return None
        with open(weights, "rb") as handle:
            return sha256_stream(handle)

    def delete(self, adapter_id: str) -> None:
        folder = self.root / adapter_id
        if folder.exists():
            trash = self.root.parent / ".trash" / f"{adapter_id}-{uuid.uuid4().hex[:8]}"
            trash.parent.mkdir(exist_ok=True)
            os.rename(folder, trash)  # gone from adapters/ at once, then freed
            shutil.rmtree(trash, ignore_errors=True)

    def ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []

    def modified(self, adapter_id: str) -> float | None:
        """When the folder last changed (epoch seconds), None if it is gone."""
        return mtime(self.root / adapter_id)

    def leftovers(self) -> list[str]:
        return []


class FsspecStorage:
    """Adapters under an fsspec URL; reads go through a local cache keyed by sha256."""

    def __init__(self, url: str, pool_path: Path) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        self.cache = pool_path / ".cache"

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def publish(self, staging: Path, adapter_id: str) -> None:
        remote_staging = self._path(".staging", uuid.uuid4().hex)
        for file in staging.iterdir():
            self.fs.put_file(str(file), f"{remote_staging}/{file.name}")
        final = self._path(adapter_id)
        if self.fs.exists(final):
            self.fs.rm(final, recursive=True)
        self.fs.mv(remote_staging, final, recursive=True)

    def publish_file(self, staged: Path, adapter_id: str, name: str) -> None:
        """Upload one file into a published adapter's folder (an object store writes it whole)."""
        if not self.fs.exists(self._path(adapter_id, ADAPTER_WEIGHTS)):
            raise FileNotFoundError(f"adapter folder {self._path(adapter_id)} does not exist")
        self.fs.put_file(str(staged), self._path(adapter_id, name))

    def read_file(self, adapter_id: str, name: str) -> bytes | None:
        path = self._path(adapter_id, name)
        return self.fs.cat_file(path) if self.fs.exists(path) else None

    def delete_file(self, adapter_id: str, name: str) -> None:
        if self.fs.exists(self._path(adapter_id, name)):
            self.fs.rm(self._path(adapter_id, name))

    def local_dir(self, adapter_id: str, sha256: str) -> Path | None:
        folder = self.cache / sha256
        if (folder / ADAPTER_WEIGHTS).is_file():
            return folder
        remote = self._path(adapter_id)
        if not self.fs.exists(f"{remote}/{ADAPTER_WEIGHTS}"):
            return None
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / f".download-{uuid.uuid4().hex}"
        tmp.mkdir()
        for entry in self.fs.ls(remote, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            self.fs.get_file(entry, str(tmp / name))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return folder

    def weights_sha(self, adapter_id: str) -> str | None:
        path = self._path(adapter_id, ADAPTER_WEIGHTS)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as handle:
            return sha256_stream(handle)

    def delete(self, adapter_id: str) -> None:
        if self.fs.exists(self._path(adapter_id)):
            self.fs.rm(self._path(adapter_id), recursive=True)

    def ids(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        names = [e.rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(self.root, detail=False)]
        return sorted(n for n in names if not n.startswith("."))

    def modified(self, adapter_id: str) -> float | None:
        """When the folder's weights were written (epoch seconds), None when the store can't say."""
        try:
            info = self.fs.info(self._path(adapter_id, ADAPTER_WEIGHTS))
        except FileNotFoundError:
            return None
        for key in ("mtime", "LastModified", "last_modified", "created"):
            value = info.get(key)
            if isinstance(value, (int, float)):
                return float(value)
            if hasattr(value, "timestamp"):
                return float(value.timestamp())
        return None

    def leftovers(self) -> list[str]:
        staging = self._path(".staging")
        return [f"{self.url}/.staging/{e.rstrip('/').rsplit('/', 1)[-1]}"
                for e in self.fs.ls(staging, detail=False)] if self.fs.exists(staging) else []


def open_storage(url: str | None, pool_path: Path) -> LocalStorage | FsspecStorage:
    return FsspecStorage(url, pool_path) if url else LocalStorage(pool_path)
