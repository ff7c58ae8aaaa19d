"""Every `pool` command, `rank`, `adapt` and `train --contribute` against a served pool, as the
command line runs them (in-process), next to the same commands on the pool's folder; the
commands that only make sense on the server's disk refuse with the reason."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import httpx
import pytest

from adapterpool.cli.main import main
from adapterpool.pool import AdapterPool
from adapterpool.pool.tokens import create_token
from tests.conftest import serving

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--max-train", "48", "--max-eval", "24", "--max-length", "32"]


@pytest.fixture(scope="module")
def served(tiny_pool, tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-commands")
    shutil.copytree(tiny_pool.path, root / "pool")
    pool = AdapterPool(root / "pool")
    token = create_token(pool, "dora")
    with serving(pool.path) as (url, _):
        yield {"url": url, "token": token, "pool": pool, "root": root}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """The remote pool's download cache (platformdirs' user cache) inside the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_show_and_export_match_the_folder(served, capsys, tmp_path):
    url, pool = served["url"], served["pool"]
    code, out, _ = _run(capsys, "pool", "list", url, "--json")
    assert code == 0
    assert json.loads(out) == [r.as_json() for r in pool.list()]
    code, out, _ = _run(capsys, "pool", "list", url)
    assert code == 0 and "adapters" in out
    record = pool.list()[0]
    code, out, _ = _run(capsys, "pool", "show", url, record.id)
    assert code == 0 and json.loads(out) == record.as_json()
    # export from the server and from the folder: the same files, byte for byte (the task
    # summary included: the tiny pool's adapters have one)
    assert _run(capsys, "pool", "export", url, record.id, str(tmp_path / "remote"))[0] == 0
    assert _run(capsys, "pool", "export", str(pool.path), record.id,
                str(tmp_path / "local"))[0] == 0
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert "task_embedding.safetensors" in names and "README.md" in names
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == names
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "local", tmp_path / "remote", names,
                                               shallow=False)
    assert (mismatch, errors) == ([], []) and sorted(match) == names


def test_import_and_remove_with_a_token(served, capsys, tmp_path):
    url, pool, token = served["url"], served["pool"], served["token"]
    source = pool.list()[1]
    assert _run(capsys, "pool", "export", url, source.id, str(tmp_path / "out"))[0] == 0
    code, _, err = _run(capsys, "pool", "import", url, str(tmp_path / "out"), "--token", token)
    assert code == 2 and "already in the pool as " + source.id in err  # a duplicate: 409
    # a new adapter (nudged weights) with its task summary: the summary travels with it
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "out" / "adapter_model.safetensors")
    key = next(k for k in sorted(state) if "lora_B" in k)
    state[key] = state[key] + 1e-3
    save_file(state, tmp_path / "out" / "adapter_model.safetensors")
    code, _, err = _run(capsys, "pool", "import", url, str(tmp_path / "out"))
    assert code == 2 and "needs a write token" in err
    code, out, _ = _run(capsys, "pool", "import", url, str(tmp_path / "out"), "--token", token,
                        "--task-name", "imported-over-http")
    assert code == 0
    new_id = out.split("imported as ")[1].split()[0]
    assert pool.get(new_id).task_name == "imported-over-http"
    assert new_id in httpx.get(url + "/api/task-summaries").json()
    code, out, _ = _run(capsys, "pool", "remove", url, new_id, "--token", token)
    assert code == 0 and f"removed {new_id}" in out
    assert new_id not in {r.id for r in pool.list()}


def test_verify_checks_what_is_served_and_local_only_commands_refuse(served, capsys):
    url, pool = served["url"], served["pool"]
    code, out, _ = _run(capsys, "pool", "verify", url, "--json")
    report = json.loads(out)
    assert code == 0 and report["consistent"] and report["verified"] == len(pool.list())
    code, _, err = _run(capsys, "pool", "verify", url, "--repair")
    assert code == 2 and "run it there" in err
    code, _, err = _run(capsys, "pool", "reindex", url)
    assert code == 2 and "run it on the server" in err
    code, _, err = _run(capsys, "pool", "init", url)
    assert code == 2 and "is a pool server" in err
    # an adapter altered on the server's disk: the server refuses to serve it, verify says so
    victim = pool.list()[-1]
    weights = pool.path / "adapters" / victim.id / "adapter_model.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        code, out, err = _run(capsys, "pool", "verify", url)
        assert code == 2 and victim.id in out and "missing or altered" in err
    finally:
        weights.write_bytes(original)


def test_rank_train_and_adapt_against_a_served_pool(served, capsys, tmp_path):
    url, pool, token = served["url"], served["pool"], served["token"]
    before = {r.id for r in pool.list()}
    code, out, _ = _run(capsys, "rank", "builtin:movie-sentiment", "--pool", url, "--metric",
                        "knn", "--subset", "2", "--max-samples", "48", "--json", *SMALL)
    assert code == 0 and len(json.loads(out)["scores"]) == 2
    code, out, _ = _run(capsys, "rank", "builtin:movie-sentiment", "--pool", url, "--metric",
                        "knn", "--subset", "2", "--subset-strategy", "prefilter",
                        "--max-samples", "48", "--json", *SMALL)
    ranked = json.loads(out)
    assert code == 0 and len(ranked["prefilter"]["chosen"]) == 2
    assert not any("serves no task summaries" in w or "no task summary" in w
                   for w in ranked["warnings"])  # the served summaries were used
    code, out, _ = _run(capsys, "train", "builtin:subjectivity", "--pool", url, "--contribute",
                        "--token", token, "--epochs", "1", "--no-energy", "--json",
                        "--out", str(tmp_path / "train"), *SMALL)
    trained = json.loads(out)
    assert code == 0 and trained["outcome"] == "standard_lora"
    assert pool.get(trained["contributed_adapter_id"]).parent_id is None
    code, out, _ = _run(capsys, "adapt", "builtin:movie-sentiment", "--pool", url, "--metric",
                        "knn", "--subset", "2", "--max-tries", "1", "--threshold", "0",
                        "--epochs", "1", "--standard-epochs", "1", "--max-samples", "48",
                        "--contribute", "--token", token, "--no-energy", "--json",
                        "--out", str(tmp_path / "adapt"), *SMALL)
    adapted = json.loads(out)
    assert code == 0 and adapted["outcome"] == "transfer"
    child = pool.get(adapted["contributed_adapter_id"])
    assert child.parent_id == adapted["attempts"][0]["adapter_id"]
    assert {r.id for r in pool.list()} == before | {child.id, trained["contributed_adapter_id"]}
    code, _, err = _run(capsys, "adapt", "builtin:movie-sentiment", "--pool", url, "--metric",
                        "knn", "--subset", "1", "--max-tries", "1", "--threshold", "0",
                        "--epochs", "1", "--max-samples", "48", "--contribute", "--no-energy",
                        "--json", "--out", str(tmp_path / "adapt2"), *SMALL)
    assert code == 2 and "needs a write token" in err
