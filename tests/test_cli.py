"""The command line end to end with the packaged MiniLM on a few hundred real examples."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from adapterpool.cli.main import adapt_config_from_args, build_parser, main
from adapterpool.config import AdaptConfig, TrainConfig


def test_cli_train_contribute_then_adapt_with_minilm(tmp_path, capsys):
    pool = str(tmp_path / "pool")
    assert main(["pool", "init", pool]) == 0
    assert "created pool" in capsys.readouterr().out
    common = ["--max-train", "160", "--max-eval", "64", "--max-length", "64", "--no-energy"]
    assert main(["train", "builtin:subjectivity", "--pool", pool, "--epochs", "1", "--contribute",
                 "--out", str(tmp_path / "src"), "--json", *common]) == 0
    train_report = json.loads(capsys.readouterr().out)
    assert train_report["outcome"] == "standard_lora"
    source_id = train_report["contributed_adapter_id"]
    assert source_id and source_id.startswith("subjectivity-")

    assert main(["adapt", "builtin:movie-sentiment", "--pool", pool, "--metric", "leep",
                 "--subset", "1", "--max-tries", "1", "--threshold", "0", "--epochs", "1",
                 "--max-samples", "100", "--out", str(tmp_path / "run"), "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "transfer"
    assert report["attempts"][0]["adapter_id"] == source_id
    assert report["task"]["n_train"] == 160
    assert report == json.loads((tmp_path / "run" / "report.json").read_text())
    # a few hundred examples with the real base model learn something
    assert report["attempts"][0]["validation"]["accuracy"] > 0.5

    assert main(["pool", "list", pool, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [source_id]
    assert main(["rank", "builtin:movie-sentiment", "--pool", pool, "--metric", "logme",
                 "--metric", "nce", "--max-train", "100", "--max-samples", "50", "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert set(ranked["scores"][0]["scores"]) == {"logme", "nce"}


@pytest.mark.parametrize("argv, message", [
    (["pool", "list", "/nonexistent/pool"], "not an adapter pool"),
    (["rank", "/nonexistent/task", "--pool", "POOL"], "does not exist"),
    (["rank", "builtin:subjectivity", "--pool", "POOL", "--metric", "logmee"], "unknown metric"),
    (["train", "builtin:subjectivity", "--pool", "POOL", "--epochs", "0"], "epochs must be"),
    (["adapt", "builtin:subjectivity", "--pool", "POOL", "--strategy", "early-pas,cutoff"],
     "did you mean 'early-pass'"),
    (["adapt", "builtin:subjectivity", "--pool", "POOL", "--strategy", "plain",
      "--min-score", "0.5"], "needs the 'cutoff' strategy"),
])
def test_cli_errors_are_clear_and_exit_2(tmp_path, capsys, argv, message):
    if "POOL" in argv:
        assert main(["pool", "init", str(tmp_path / "p"), "--base-model", "all-MiniLM-L6-v2"]) == 0
        capsys.readouterr()
        argv = [str(tmp_path / "p") if a == "POOL" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("adapterpool: error:") and message in err.lower()


def _parse(command: str, *options: str):
    return build_parser().parse_args([command, "builtin:subjectivity", "--pool", "p", *options])


def test_cli_defaults_are_the_dataclass_defaults():
    assert adapt_config_from_args(_parse("adapt")) == AdaptConfig()
    assert adapt_config_from_args(_parse("train")) == AdaptConfig(max_tries=0)
    args = _parse("adapt")
    assert args.fallback_epochs == TrainConfig().epochs  # --standard-epochs
    assert args.transfer_epochs == AdaptConfig().transfer_epochs  # --epochs
    assert _parse("train").fallback_epochs == TrainConfig().epochs  # train's --epochs
    rank = _parse("rank")
    assert (rank.subset, rank.max_samples, rank.max_length, rank.seed) == (
        AdaptConfig().subset, AdaptConfig().max_samples, TrainConfig().max_length,
        AdaptConfig().seed)
    # every AdaptConfig field but the fallback (its own options) has an adapt option
    assert {f.name for f in fields(AdaptConfig)} - set(vars(args)) == {"fallback"}


def test_cli_options_reach_the_config():
    config = adapt_config_from_args(_parse(
        "adapt", "--strategy", "cutoff,early-pass,racing", "--epochs", "1.5", "--standard-epochs",
        "10", "--evals-per-epoch", "1", "--patience", "2", "--min-score", "0.25", "--race-size",
        "2", "--probe-epochs", "0.5", "--no-pass-fallback", "--cutoff-fallback", "--seed", "4",
        "--threshold-metric", "f1_macro", "--cutoff-max-gain", "0.1", "--contribute",
    ))
    assert config == AdaptConfig(
        strategy=("early-pass", "cutoff", "racing"), transfer_epochs=1.5,
        fallback=TrainConfig(epochs=10, evals_per_epoch=1, patience=2, seed=4,
                             selection_metric="f1_macro"),
        min_score=0.25, race_size=2, probe_epochs=0.5, pass_fallback=False, cutoff_fallback=True,
        seed=4, threshold_metric="f1_macro", cutoff_max_gain_per_epoch=0.1, contribute=True,
    )
    assert config.transfer_epochs == 1.5 and _parse("adapt", "--epochs", "2").transfer_epochs == 2


def test_unreachable_hub_base_model_says_so_and_suggests_a_local_path(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, HF_HUB_OFFLINE="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    result = subprocess.run(
        [sys.executable, "-m", "adapterpool.cli", "pool", "init", str(tmp_path / "p"),
         "--base-model", "someone/not-a-model"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert "cannot reach base model 'someone/not-a-model'" in result.stderr
    assert "--base-model /path/to/model" in result.stderr
    assert not (tmp_path / "p").exists()
