"""Two ``adapterpool serve`` replicas on one PostgreSQL catalog and one storage root, written
through both at once (``benchmarks/bench_server_replicas.py`` for a shorter while): 8 uploaders,
races of one adapter to both replicas, re-uploads, removals, and ``pool verify --repair``
beside them. Nothing accepted may be lost or listed twice, both replicas must list the same
adapters, and every listed adapter's downloaded weights must hash to what was sent."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from adapterpool.pool import AdapterPool
from tests.test_pool_postgres import URL, database_url  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(
    not URL, reason="no PostgreSQL server (ADAPTERPOOL_TEST_POSTGRES_URL)")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_server_replicas.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_server_replicas", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_two_replicas_lose_and_duplicate_nothing_beside_repair(tiny_pool, tmp_path,
                                                               database_url):  # noqa: F811
    pool = AdapterPool.init(tmp_path / "pool", base_model=tiny_pool.base_model,
                            catalog_url=database_url)
    source = tiny_pool.adapter_dir(tiny_pool.list()[0].id)
    result = _bench().run(pool.path, source, replicas=2, uploaders=8, seconds=12,
                          repair_every=4)
    assert result["uploads_accepted"] >= 16, json.dumps(result)  # each uploader, twice or more
    assert result["races"] >= 1 and result["duplicates_refused"] >= 1, result
    assert result["removed"] >= 1 and result["repairs"] >= 1, result
    assert result["unexpected"] == 0, result["unexpected_samples"]  # every race: one 201, one 409
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["unknown_listed"] == 0
    assert result["removed_still_listed"] == 0 and result["replicas_agree"]
    assert result["hashes_checked"] == (result["uploads_accepted"] + result["warm_up_uploads"]
                                        - result["removed"])
    assert result["bad_hashes"] == 0 and result["repair_deleted_catalogued"] == 0
    assert result["final_verify_consistent"]
    assert len(AdapterPool(pool.path).list()) == result["hashes_checked"]
