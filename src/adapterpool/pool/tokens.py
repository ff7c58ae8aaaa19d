"""Write tokens of a shared pool: random, shown once, stored only as sha256 in the catalog."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import insert, select

from .catalog import tokens_table
from .store import AdapterPool

TOKEN_PREFIX = "apw_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(pool: AdapterPool, name: str) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with pool.engine.begin() as conn:
        conn.execute(insert(tokens_table).values(
            token_sha256=_digest(token), name=name,
            created_at=datetime.now(UTC).isoformat()))
    return token


def token_owner(pool: AdapterPool, token: str | None) -> str | None:
    """The name a valid token was issued to, else None (constant-time comparison)."""
    if not token:
        return None
    digest = _digest(token)
    with pool.engine.connect() as conn:
        rows = conn.execute(select(tokens_table.c.token_sha256, tokens_table.c.name)).all()
    for stored, name in rows:
        if hmac.compare_digest(stored, digest):
            return name
    return None
