"""Every Python and shell example in README.md runs, so an example that stops working fails here.

The examples run as written except for what is listed below, in the open: the base model is the
tiny random BERT of ``tiny_base_model`` (the packaged MiniLM takes minutes per training run on a
small CPU), budgets are small, placeholders (``POOL``, ``TASK``, ``ID``, ...) become real values,
and option syntax (``[--json]``, ``a|b``) becomes concrete variants. A command added to README.md
that this file does not know fails ``test_every_readme_command_is_run_or_skipped_with_a_reason``
until it is run here or skipped with a reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# ---------------------------------------------------------------------------------------------
# README parsing


def _blocks(language: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _commands(block: str) -> list[str]:
    """The block's command lines: continuations joined, trailing comments and spacing dropped."""
    commands, pending = [], ""
    for line in block.splitlines():
        pending += line
        if pending.rstrip().endswith("\\"):
            pending = pending.rstrip()[:-1] + " "
            continue
        command = re.sub(r"\s+#\s.*$", "", pending).strip()
        if command:
            commands.append(" ".join(command.split()))
        pending = ""
    return commands


def _bash_blocks() -> list[list[str]]:
    return [_commands(block) for block in _blocks("bash")]


# ---------------------------------------------------------------------------------------------
# How each README command is run

# Commands with option syntax, run as these concrete variants (placeholders filled in later):
# every option given, one choice of a|b (f1_macro, not the default); bare forms add no coverage.
# RUN: adapt's --out (DIR is `pool export`'s folder). NEW: the pool `pool init` creates (empty,
# then the import target: importing an adapter back into the pool it was exported from would be
# a duplicate).
RUN_AS: dict[str, list[str]] = {
    "adapterpool pool init POOL [--base-model M]": [
        "adapterpool pool init NEW --base-model M",
    ],
    "adapterpool rank TASK --pool POOL --metric logme --metric leep --subset 5 --seed 0 [--json]": [
        "adapterpool rank TASK --pool POOL --metric logme --metric leep --subset 5 --seed 0 --json",
    ],
    "adapterpool adapt TASK --pool POOL --metric knn --subset 5 --max-tries 2 --threshold 0.8 "
    "[--threshold-metric accuracy|f1_macro|f1_weighted] [--epochs 2] [--contribute] [--out DIR] "
    "[--strategy early-pass,cutoff,warm-fallback]": [
        "adapterpool adapt TASK --pool POOL --metric knn --subset 5 --max-tries 2 --threshold 0.8 "
        "--threshold-metric f1_macro --epochs 2 --contribute --out RUN "
        "--strategy early-pass,cutoff,warm-fallback",
    ],
    "adapterpool pool list POOL [--json] | pool show POOL ID | pool remove POOL ID": [
        "adapterpool pool list POOL",
        "adapterpool pool list POOL --json",
        "adapterpool pool show POOL ID",
        "adapterpool pool remove POOL ID",
    ],
    "adapterpool pool verify POOL [--repair]": [
        "adapterpool pool verify POOL",
        "adapterpool pool verify POOL --repair",
    ],
    # hf://user/repo needs the network: only the folder form runs
    "adapterpool pool import POOL DIR|hf://user/repo [--task-name N --kind single --labels a,b]": [
        "adapterpool pool import NEW DIR --task-name N --kind single --labels LABELS",
    ],
    # the served pool gets the tiny base model (the README's default is MiniLM)
    "adapterpool pool init /srv/team-pool": [
        "adapterpool pool init /srv/team-pool --base-model M",
    ],
}

# `serve` blocks: it is started in the background on 127.0.0.1 and a free port instead.
SERVE = "adapterpool serve /srv/team-pool --host 0.0.0.0 --port 8750 [--max-upload-mb 256]"

SKIPPED: dict[str, str] = {
    "make demo": "installs everything, then trains MiniLM for minutes (the demo, not an example)",
    "make test": "runs the whole suite, this file included",
    "adapterpool bench --config benchmarks/family/config.json":
        "the benchmark: hours of training on the family pool",
}

TASK = "builtin:movie-sentiment"
SMALL = ["--max-train", "48", "--max-eval", "24", "--max-length", "32"]
BUDGET: dict[str, list[str]] = {  # appended to these subcommands (later options win)
    "train": [*SMALL, "--epochs", "1", "--no-energy"],
    "rank": [*SMALL, "--max-samples", "48"],
    "adapt": [*SMALL, "--max-samples", "48", "--standard-epochs", "1", "--no-energy"],
}
HAS_OPTION_SYNTAX = re.compile(r"[\[\]|]|\.\.\.")


def _is_literal(command: str) -> bool:
    return not HAS_OPTION_SYNTAX.search(command.replace("apw_...", "apw_TOKEN"))


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false")


Values = dict[str, str | Callable[[], str]]


def _argv(command: str, values: Values) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "adapterpool", command
    argv = []
    for word in words[1:]:
        value = values.get(word, word)
        argv.append(value() if callable(value) else value)
    return argv + BUDGET.get(argv[0], [])


def _cli(argv: list[str], cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "adapterpool.cli", *argv], cwd=cwd,
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"adapterpool {shlex.join(argv)} exited {result.returncode}\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def _run_block(commands: list[str], values: Values, cwd: Path) -> list[tuple[list[str], str]]:
    """Run each command's variants in order; their argv and standard output."""
    ran = []
    for command in commands:
        for variant in RUN_AS.get(command, [command]):
            argv = _argv(variant, values)
            ran.append((argv, _cli(argv, cwd)))
    return ran


# ---------------------------------------------------------------------------------------------
# The checks


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    blocks = _bash_blocks()
    assert len(blocks) == 6, "README.md's bash blocks changed: update tests/test_readme.py"
    assert blocks[0] == ["make demo", "make test"]
    commands = [c for block in blocks for c in block]
    assert all(c.startswith("adapterpool ") for block in blocks[1:] for c in block)
    # the skips and special cases name exactly what README.md holds: none is stale
    assert {c for c in commands if c in SKIPPED} == set(SKIPPED)
    assert {c for c in commands if c in RUN_AS} == set(RUN_AS)
    assert SERVE in commands
    unknown = [c for c in commands
               if c not in RUN_AS and c not in SKIPPED and c != SERVE and not _is_literal(c)]
    assert not unknown, f"README commands with option syntax to add to RUN_AS: {unknown}"
    for variants in RUN_AS.values():
        assert all(_is_literal(v) for v in variants)
    assert len(_blocks("python")) == 1, "a new Python example in README.md: run it here"


def _first_single(pool) -> object:
    return next(r for r in sorted(pool.list(), key=lambda r: r.id) if r.task_kind == "single")


def test_readme_command_line_section_runs(pool_copy, tiny_base_model, tmp_path):
    """The "Command line" block, in order, on a copy of the tiny pool (POOL)."""
    exported: dict[str, object] = {}

    def adapter_id() -> str:  # resolved when used: `pool remove` changes what is there
        record = _first_single(pool_copy)
        exported["record"] = record
        return record.id

    values: Values = {
        "POOL": str(pool_copy.path), "NEW": str(tmp_path / "new-pool"), "TASK": TASK,
        "M": tiny_base_model, "ID": adapter_id, "RUN": str(tmp_path / "run"),
        "DIR": str(tmp_path / "export"),
        "N": lambda: exported["record"].task_name,
        "LABELS": lambda: ",".join(exported["record"].label_names),
    }
    before = {r.id for r in pool_copy.list()}
    commands = [c for c in _bash_blocks()[1] if c not in SKIPPED]
    start = time.monotonic()
    ran = _run_block(commands, values, tmp_path)
    print(f"ran {len(ran)} commands in {time.monotonic() - start:.0f} s")

    # train --contribute added one, remove took one away; adapt may have contributed one
    after = {r.id for r in pool_copy.list()}
    assert any(i.startswith("subjectivity-") for i in after - before)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["outcome"] in {"transfer", "standard_lora", "warm_fallback", "failed"}
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    # `pool export POOL ID DIR`: a PEFT folder with a model card
    assert (tmp_path / "export" / "adapter_config.json").is_file()
    assert (tmp_path / "export" / "README.md").is_file()
    from adapterpool.pool import AdapterPool

    imported = AdapterPool(tmp_path / "new-pool").list()
    assert [r.task_name for r in imported] == [exported["record"].task_name]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_readme_share_a_pool_section_runs(tiny_pool, tiny_base_model, tmp_path):
    """The two "Share a pool" blocks: init, token, serve (background), then the HTTP commands."""
    import httpx

    from adapterpool.pool import AdapterPool
    from adapterpool.pool.maintenance import export, import_adapter

    team = tmp_path / "team-pool"
    values: Values = {"/srv/team-pool": str(team), "M": tiny_base_model, "TASK": TASK}
    setup, clients = _bash_blocks()[4:6]
    serve_at = setup.index(SERVE)
    ran = _run_block(setup[:serve_at], values, tmp_path)
    (token,) = [out.strip() for argv, out in ran if argv[:2] == ["token", "create"]]
    assert token.startswith("apw_")

    # something to rank and adapt from: one tiny-pool adapter; and ./my-peft-adapter, a PEFT
    # folder whose head has 4 labels like the README's news example
    source = next(r for r in tiny_pool.list() if r.task_name == "subjectivity")
    import_adapter(AdapterPool(team), str(export(tiny_pool, source.id, tmp_path / "source")))
    _cli(_argv(f"adapterpool train builtin:pos-of-definition --pool {team} --out "
               f"{tmp_path / 'news-run'}", values), tmp_path)

    port = _free_port()
    serve = _argv(SERVE.replace(" [--max-upload-mb 256]", " --max-upload-mb 256"), values)
    serve[serve.index("--host") + 1] = "127.0.0.1"
    serve[serve.index("--port") + 1] = str(port)
    process = subprocess.Popen([sys.executable, "-m", "adapterpool.cli", *serve], cwd=tmp_path,
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/info", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    pytest.fail("server did not start: " + process.stderr.read()[-2000:])
                time.sleep(0.3)
        values |= {"http://HOST:8750": url, "apw_...": token,
                   "./my-peft-adapter": str(tmp_path / "news-run" / "adapter")}
        _run_block(clients, values, tmp_path)
    finally:
        process.terminate()
        process.wait(timeout=20)

    tasks = sorted(r.task_name for r in AdapterPool(team).list())
    assert "news" in tasks  # the import over HTTP, with the token
    assert len(tasks) == 3  # the source, adapt --contribute's new adapter, news


# The Python example's substitutions: (README text, replacement, times it occurs).
PYTHON_SUBSTITUTIONS = [
    ('AdapterPool.init("my-pool")', 'AdapterPool.init("my-pool", base_model=TINY)', 1),
    ("max_train=500)", "max_train=64, max_eval=32)", 2),
    ("TrainConfig(epochs=1)", "TrainConfig(epochs=1, max_length=32)", 1),
    ('AdaptConfig(metric="knn",',
     'AdaptConfig(metric="knn", max_samples=64, fallback=TrainConfig(epochs=1, max_length=32),',
     1),
]


def test_readme_python_example_runs(tiny_base_model, tmp_path, monkeypatch):
    (code,) = _blocks("python")
    for old, new, count in PYTHON_SUBSTITUTIONS:
        assert code.count(old) == count, f"README's Python example changed near {old!r}"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"TINY": tiny_base_model, "__name__": "readme_example"}
    exec(compile(code, "README.md (python)", "exec"), namespace)  # noqa: S102

    pool, result, ranking = namespace["pool"], namespace["result"], namespace["ranking"]
    assert len(pool.list()) >= 1
    assert ranking.scores
    assert result.outcome in {"transfer", "warm_fallback", "standard_lora", "failed"}
    assert result.model is not None
    report = json.loads((tmp_path / "my-run" / "report.json").read_text())
    assert report["outcome"] == result.outcome
    assert (tmp_path / "my-run" / "adapter" / "adapter_config.json").is_file()


# The task-kind examples (text2text, image), run in-process with tiny models: (README word,
# stand-in) and options appended per subcommand (later options win).
KIND_BUDGET = ["--max-train", "24", "--max-eval", "8", "--max-length", "16", "--batch-size", "8",
               "--evals-per-epoch", "1", "--max-new-tokens", "4", "--no-energy"]
KIND_APPEND = {"train": [*KIND_BUDGET, "--epochs", "1"],
               "adapt": [*KIND_BUDGET, "--epochs", "1", "--standard-epochs", "1",
                         "--max-samples", "24", "--subset", "2"]}


def _table_to_text_folder(folder: Path) -> None:
    """A text2text folder in the layout of the example's E2E / ViGGO data: train pairs, and
    validation / test inputs with every reference."""
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"name": folder.name, "task_type": "text2text"}))
    rows = [{"text": f"name[place {i}], food[dish {i % 4}]",
             "target": f"place {i} serves dish {i % 4}"} for i in range(40)]
    held = [r | {"references": [r["target"], f"dish {i % 4} at place {i}"]}
            for i, r in enumerate(rows[:8])]
    for split, lines in (("train", rows), ("validation", held), ("test", held)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_readme_task_kind_examples_run(tiny_base_model, tiny_vit_model, tmp_path, monkeypatch,
                                       capsys, one_torch_thread):
    """The text2text example (an EncoderDecoderModel of the tiny BERT standing in for MiniLM's)
    and the image example (the tiny ViT standing in for ViT-base), in order."""
    from adapterpool.cli.main import main
    from adapterpool.pool import AdapterPool

    monkeypatch.chdir(tmp_path)
    for name in ("e2e_nlg", "viggo"):  # the example's table-to-text folders, a few rows each
        _table_to_text_folder(tmp_path / name)
    text2text, image = _bash_blocks()[2:4]
    stand_ins = {"google/vit-base-patch16-224-in21k": tiny_vit_model}
    for command in text2text + image:
        argv = [stand_ins.get(w, w) for w in shlex.split(command)[1:]]
        argv += KIND_APPEND.get(argv[0], [])
        if argv[0] == "encoder-decoder":
            argv += ["--encoder", tiny_base_model]
        assert main(argv) == 0, command
    capsys.readouterr()
    for pool, run, kind, metric in (("t2t-pool", "t2t-run", "text2text", "rouge_l"),
                                    ("vit-pool", "parity-run", "image", "accuracy")):
        report = json.loads((tmp_path / run / "report.json").read_text())
        assert report["task"]["kind"] == kind and report["threshold"]["metric"] == metric
        assert report["attempts"][0]["kind"] == "transfer"  # the trained source was drawn
        if kind == "text2text":  # what the final model writes, beside its inputs
            assert [set(e) for e in report["examples"]] == [{"input", "output",
                                                             "references"}] * 3
        kinds = {r.task_kind for r in AdapterPool(tmp_path / pool).list()}
        assert kinds == {kind}


# -- the README's numbers and rules are the code's ------------------------------------------------

def test_readme_states_the_default_strategy_rule_the_benchmark_applies():
    """The bar a strategy must meet to become the default, as the README words it, is read from
    the defaults of ``choose_default_strategy``: a condition added to or dropped from either
    side (as "time <= 0.5" once was) fails here."""
    import inspect

    from adapterpool.bench.report import choose_default_strategy

    bar = {name: p.default for name, p in
           inspect.signature(choose_default_strategy).parameters.items()
           if p.default is not inspect.Parameter.empty}
    assert set(bar) == {"min_accuracy", "max_target_time"}
    text = " ".join(README.read_text(encoding="utf-8").split())
    stated = re.search(r"the bar the benchmark sets for a default \((.*?); the rule is", text)
    assert stated, "the README no longer states the default-strategy rule where it did"
    assert stated.group(1) == (f"accuracy >= {bar['min_accuracy']} of standard LoRA on average, "
                               f"no target above {bar['max_target_time']}x")


def test_readme_strategy_table_states_the_option_defaults():
    """Every ``--flag`` (value) in the README's strategy table is that option's default."""
    from dataclasses import fields

    from adapterpool.config import AdaptConfig
    from adapterpool.loop.strategies import STRATEGIES

    defaults = {f.metadata["flag"]: f.default for cls in STRATEGIES.values() if cls.options
                for f in fields(cls.options)}
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| strategy | what it changes |"):text.index("The default, ")]
    stated = re.findall(r"`(--[a-z-]+)` \(([0-9.]+)\)", table)
    assert len(stated) >= 8
    for flag, value in stated:
        assert float(value) == defaults[flag], flag
    from adapterpool import DEFAULT_STRATEGY

    assert AdaptConfig().strategy == DEFAULT_STRATEGY
    stated = re.search(r"The default, `([a-z,-]+)` \(`adapterpool.DEFAULT_STRATEGY`",
                       " ".join(text.split()))
    assert stated and tuple(stated.group(1).split(",")) == DEFAULT_STRATEGY
