"""The catalog on a real PostgreSQL server (started by .ci/run; set ADAPTERPOOL_TEST_POSTGRES_URL
to run it elsewhere): adds, lists, removes, and concurrent writers."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
from sqlalchemy import create_engine, text

from adapterpool.pool import AdapterPool, DuplicateAdapterError
from adapterpool.pool.maintenance import verify
from tests.test_pool_durability import start_writer

URL = os.environ.get("ADAPTERPOOL_TEST_POSTGRES_URL")
if not URL and os.environ.get("CI") == "true":
    pytest.fail("CI must provide ADAPTERPOOL_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)",
                pytrace=False)
pytestmark = pytest.mark.skipif(
    not URL, reason="no PostgreSQL server (ADAPTERPOOL_TEST_POSTGRES_URL)"
)


@pytest.fixture()
def database_url():
    name = f"adapterpool_{uuid.uuid4().hex[:12]}"
    admin = create_engine(URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_postgres_catalog_add_list_remove_and_concurrent_writers(tiny_pool, tmp_path, database_url):
    pool = AdapterPool.init(tmp_path / "pool", base_model=tiny_pool.base_model,
                            catalog_url=database_url)
    assert pool.engine.dialect.name == "postgresql"
    source = tmp_path / "source"
    shutil.copytree(tiny_pool.adapter_dir(tiny_pool.list()[0].id), source)
    record = pool.add(source)
    assert AdapterPool(tmp_path / "pool").get(record.id).label_names == record.label_names
    with pytest.raises(DuplicateAdapterError):
        pool.add(source)
    workers = [start_writer(pool, source, w, 5) for w in range(4)]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    assert len(pool.list()) == 1 + 20
    assert verify(pool)["consistent"]
    pool.remove(record.id)
    assert len(pool.list()) == 20


def test_postgres_repair_beside_writers_deletes_nothing_catalogued(tiny_pool, tmp_path,
                                                                   database_url):
    pool = AdapterPool.init(tmp_path / "pool", base_model=tiny_pool.base_model,
                            catalog_url=database_url)
    source = tmp_path / "source"
    shutil.copytree(tiny_pool.adapter_dir(tiny_pool.list()[0].id), source)
    workers = [start_writer(pool, source, w, 8) for w in range(3)]
    repairs = 0
    while any(w.poll() is None for w in workers) or repairs < 3:
        assert verify(pool, repair=True)["consistent"]
        repairs += 1
    outputs = [w.communicate(timeout=240) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    added = {line.split()[1] for out, _ in outputs for line in out.splitlines()
             if line.startswith("added")}
    assert len(added) == 24 and added == {r.id for r in pool.list()}
    final = verify(pool)
    assert final["consistent"] and final["verified"] == 24 and not final["orphans"]
