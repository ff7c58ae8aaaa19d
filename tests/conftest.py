"""Shared fixtures: a tiny random BERT (fast), and small real tasks."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
BENCH_DATA = Path(__file__).resolve().parents[2] / "shared" / "bench-data"


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-wide BERT with random weights and the real MiniLM tokenizer, saved locally."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from adapterpool.models.base_model import resolve_base_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_base_model(None)).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory: pytest.TempPathFactory, tiny_base_model: str):
    """A pool on the tiny model with three source adapters trained on real builtin data."""
    from adapterpool.contributing import contribute
    from adapterpool.pool import AdapterPool
    from adapterpool.tasks import load_task
    from adapterpool.training.standard import train_standard
    from adapterpool.training.trainer import TrainConfig

    root = tmp_path_factory.mktemp("pools")
    pool = AdapterPool.init(root / "pool", base_model=tiny_base_model)
    for name in ("subjectivity", "debate-role", "word-sense"):
        task = load_task(f"builtin:{name}", max_train=64, max_eval=32)
        result = train_standard(task, pool.base_model, TrainConfig(epochs=1, max_length=32),
                                show_progress=False, measure_energy=False)
        contribute(pool, task, result)
    return pool


@pytest.fixture(scope="session")
def tiny_gpt2_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-wide GPT-2 with random weights and the MiniLM tokenizer without its pad token
    (a decoder-only model whose tokenizer has no pad token, as GPT-2's own has none)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    from adapterpool.models.base_model import resolve_base_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    config = GPT2Config(vocab_size=30522, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=None, eos_token_id=None)
    GPT2Model(config).save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(None))
    tokenizer.pad_token = None
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture()
def pool_copy(tiny_pool, tmp_path):
    """A copy of the tiny pool that a test may change (the module's pool stays as it is)."""
    import shutil

    from adapterpool.pool import AdapterPool

    shutil.copytree(tiny_pool.path, tmp_path / "pool")
    return AdapterPool(tmp_path / "pool")


@pytest.fixture(scope="session")
def tiny_vit_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-wide ViT on 16x16 images (patches of 8) with random weights and its image
    processor (resize to 16x16, ImageNet-style normalisation), saved locally."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_t5_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2+2-layer, 32-wide T5 with random weights and the MiniLM tokenizer (its [PAD] starts
    the decoder, its [SEP] ends a target)."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from adapterpool.models.base_model import resolve_base_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(None))
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2,
                      num_decoder_layers=2, num_heads=2, pad_token_id=tokenizer.pad_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.sep_token_id)
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bart_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2+2-layer, 32-wide BART with random weights and the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    from adapterpool.models.base_model import resolve_base_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bart")
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(None))
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.sep_token_id, forced_eos_token_id=tokenizer.sep_token_id,
    )
    BartForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one intra-op thread for a module of tiny-model tests: 32-wide layers gain nothing
    from more, and on a CPU shared with other jobs the extra threads wait on each other at every
    op (one README example: 50 s with torch's default threads beside a busy process, 5 s
    with one). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def entry_of_kind():
    """``with entry_of_kind(pool, kind):`` a catalog entry copying the pool's first adapter under
    another task kind (what a pool shared by several kinds holds), removed afterwards."""
    from contextlib import contextmanager

    from adapterpool.pool.catalog import adapters_table

    @contextmanager
    def add(pool, kind: str):
        row = pool.list()[0].to_row() | {"id": f"{kind}-clone", "task_kind": kind,
                                         "sha256": kind.encode().hex().ljust(64, "0")[:64]}
        with pool.engine.begin() as conn:
            conn.execute(adapters_table.insert().values(**row))
        try:
            yield row["id"]
        finally:
            with pool.engine.begin() as conn:
                conn.execute(adapters_table.delete().where(adapters_table.c.id == row["id"]))

    return add


@pytest.fixture()
def bench_folders(tmp_path):
    """Two real builtin tasks written as bench-data style folders."""
    import json

    from adapterpool.tasks import load_task

    root = tmp_path / "data"
    for name in ("debate-role", "speech-party"):
        task = load_task(f"builtin:{name}", max_train=48, max_eval=24)
        folder = root / name
        folder.mkdir(parents=True)
        for split in ("train", "validation", "test"):
            records = task.split(split)
            folder.joinpath(f"{split}.jsonl").write_text("".join(
                json.dumps({"text": t, "label": y}) + "\n"
                for t, y in zip(records.text, records.label, strict=True)))
        folder.joinpath("meta.json").write_text(json.dumps(
            {"name": name, "task_type": "single", "label_names": list(task.label_names),
             "family": "politics"}))
    (root / "not-a-task").mkdir()  # no meta.json: not discovered
    return root


@contextlib.contextmanager
def serving(pool_path, *extra: str, env: dict | None = None):
    """``adapterpool serve POOL`` in a subprocess on a free loopback port, until it answers;
    yields (url, process) and stops it afterwards."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "adapterpool.cli", "serve", str(pool_path), "--port", str(port),
         *extra],
        env=dict(os.environ, PYTHONPATH=str(root / "src"), **(env or {})),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/info", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("server did not start: " + process.stderr.read()[-2000:])
    try:
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=20)
