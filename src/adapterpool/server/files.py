"""Serving an adapter's files fast and still verified.

A file's sha256 is computed once and cached under what identifies its content on disk cheaply
(device, inode, size, mtime in ns): a rewrite, a replacement by rename or a truncation changes the
key and the file is hashed again before it is served. What such a key cannot see (bytes altered in
place with the mtime restored) is what ``adapterpool pool verify`` is for: every verify run (with
or without ``--repair``) rewrites the pool's verify marker, and the cache drops everything when the
marker changes, so the next download of each file hashes it again.

Files go out with their sha256 as ETag: a client that sends ``If-None-Match`` with it gets a 304
without the file being opened. The weights' ETag is the catalog's sha256, so a 304 needs no disk at
all.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from starlette.responses import FileResponse

from ..pool.maintenance import VERIFY_MARKER
from ..pool.store import sha256_file


class VerifiedFiles:
    """sha256 of files by path, valid while (device, inode, size, mtime_ns) are unchanged and the
    pool's verify marker has not changed."""

    def __init__(self, pool_path: Path) -> None:
        self.marker = Path(pool_path) / VERIFY_MARKER
        self._lock = threading.Lock()
        self._hashes: dict[Path, tuple[tuple[int, int, int, int], str]] = {}
        self._marker_key = self._stat_marker()
        self.hashed = 0  # files hashed (cache misses), for tests and curiosity

    def _stat_marker(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.marker)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def invalidate(self) -> None:
        with self._lock:
            self._hashes.clear()

    def _check_marker(self) -> None:
        marker = self._stat_marker()
        with self._lock:
            if marker != self._marker_key:
                self._hashes.clear()
                self._marker_key = marker

    def cached(self, path: Path) -> tuple[str, os.stat_result] | None:
        """The cached sha256 of ``path`` and its stat, None when it would need hashing (two
        stats: cheap enough for the event loop)."""
        self._check_marker()
        st = os.stat(path)
        with self._lock:
            hit = self._hashes.get(path)
        if hit is not None and hit[0] == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
            return hit[1], st
        return None

    def sha256(self, path: Path) -> tuple[str, os.stat_result]:
        """The sha256 of ``path`` (cached when its key is unchanged) and the stat it holds for."""
        self._check_marker()
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._hashes.get(path)
        if hit is not None and hit[0] == key:
            return hit[1], st
        sha = sha256_file(path)
        after = os.stat(path)
        with self._lock:
            self.hashed += 1
            # changed while hashing: not cached, the next request hashes it again
            if (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) == key:
                self._hashes[path] = (key, sha)
        return sha, st


class BigChunkFileResponse(FileResponse):
    """A FileResponse read in 1 MiB chunks (each chunk is a worker-thread hop; adapters are MBs)."""

    chunk_size = 1 << 20


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (quoted or weak forms, lists, ``*``)."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/").strip('"') == etag:
            return True
    return False
