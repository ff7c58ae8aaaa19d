"""Does standard training on the embedded encoder-decoder learn a table-to-text task? Test
ROUGE-L / chrF / exact match against every reference, beside a copy-the-input and a
most-frequent-target output scored the same way; wall time; and the model's outputs for a few
hand-written inputs (never the data's own texts: they stay out of the repository).

    python benchmarks/bench_text2text_learns.py [--task ../shared/bench-data-text2text/e2e_nlg]
        [--base-model .bench-cache/minilm2minilm] [--max-train 1000] [--max-eval 200]
        [--validation 100] [--epochs 4] [--batch-size 16] [--max-length 64]
        [--max-new-tokens 40] [--num-beams 1] [--prompt TEXT ...]
        [--out benchmarks/results/text2text/learns] [--save-adapter DIR]

The base model is MiniLM-to-MiniLM (``adapterpool encoder-decoder``), built into
``--base-model`` when that folder does not exist. Training is the product's standard run
(:func:`adapterpool.training.standard.train_standard`: LoRA on query/value plus the fresh
cross-attention and LM-head transform trained in full), one evaluation an epoch on the first
``--validation`` validation inputs, the best epoch's weights by ROUGE-L scored on test
(``--max-eval`` inputs, seeded draw). Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from adapterpool.models.base_model import build_encoder_decoder
from adapterpool.models.build import load_preprocessor
from adapterpool.models.saving import save_adapter
from adapterpool.tasks import load_task
from adapterpool.tasks.task import Records
from adapterpool.training.generation import decoding_for, sample_outputs, trivial_baselines
from adapterpool.training.standard import train_standard
from adapterpool.training.trainer import TrainConfig
from adapterpool.verbosity import quiet_third_party

ROOT = Path(__file__).resolve().parents[1]
# Written for this benchmark in E2E's meaning-representation format (not taken from the data).
PROMPTS = [
    "name[The Blue Door], eatType[pub], food[Italian], area[city centre], familyFriendly[yes]",
    "name[Green Leaf], eatType[restaurant], food[Chinese], priceRange[cheap], "
    "customer rating[5 out of 5], near[The Bridge]",
    "name[Harbour View], eatType[coffee shop], priceRange[more than £30], area[riverside]",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=str(ROOT.parent / "shared/bench-data-text2text/e2e_nlg"))
    parser.add_argument("--base-model", default=str(ROOT / ".bench-cache/minilm2minilm"))
    parser.add_argument("--max-train", type=int, default=1000)
    parser.add_argument("--max-eval", type=int, default=200)
    parser.add_argument("--validation", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--num-beams", type=int, default=1,
                        help="beam search in every evaluation and the outputs (1: greedy)")
    parser.add_argument("--prompt", action="append", help="an input to show the output of")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/text2text/learns"))
    parser.add_argument("--save-adapter", help="keep the trained adapter in this folder (PEFT "
                        "format, fresh modules included), e.g. to warm-start from it")
    args = parser.parse_args()
    quiet_third_party()
    base = Path(args.base_model)
    if not base.is_dir():
        build_encoder_decoder(base)
    task = load_task(args.task, max_train=args.max_train, max_eval=args.max_eval, seed=args.seed)
    task.validation = task.validation.take(range(min(args.validation, len(task.validation))))
    tokenizer = load_preprocessor(str(base), "text2text")
    trivial = trivial_baselines(task.test, tokenizer, args.max_length, task.train.target)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                         max_length=args.max_length, evals_per_epoch=1, patience=5,
                         selection_metric="rouge_l", max_new_tokens=args.max_new_tokens,
                         num_beams=args.num_beams, seed=args.seed)
    start = time.perf_counter()
    result = train_standard(task, str(base), config, measure_energy=False)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    kept = Path(args.save_adapter) if args.save_adapter else None
    adapter = save_adapter(result.model, kept or out.parent / ".adapter-tmp", {})
    size = sum(p.stat().st_size for p in adapter.iterdir())
    if kept is None:
        for path in adapter.iterdir():
            path.unlink()
        adapter.rmdir()
    prompts = args.prompt or PROMPTS
    shown = sample_outputs(result.model, Records(text=prompts, label=[], target=prompts),
                           tokenizer, n=len(prompts), max_length=args.max_length,
                           decoding=decoding_for(args.max_new_tokens, args.num_beams))
    report = {
        "task": task.describe() | {"source": Path(args.task).name},
        "base_model": "MiniLM-to-MiniLM (adapterpool encoder-decoder, seed 0)",
        "settings": vars(args) | {"train": config.as_dict()},
        "test": result.test,
        "trivial": trivial,
        "history": result.history,
        "seconds": seconds,
        "train_seconds": result.train_seconds,
        "trainable_parameters": sum(p.numel() for p in result.model.parameters()
                                    if p.requires_grad),
        "adapter_bytes": size,
        "outputs": [{"input": e["input"], "output": e["output"]} for e in shown],
        "threads": torch.get_num_threads(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    test, copy, frequent = (report["test"], report["trivial"]["copy_input"],
                            report["trivial"]["most_frequent_target"])
    lines = [f"# Standard training on {report['task']['source']} ({report['base_model']})", "",
             "| output | ROUGE-L | chrF | exact match |", "|---|---|---|---|"]
    for name, scores in (("trained (test)", test), ("copy the input", copy),
                         ("most frequent target", frequent)):
        lines.append(f"| {name} | {scores['rouge_l']:.3f} | {scores['chrf']:.3f} | "
                     f"{scores['exact_match']:.3f} |")
    lines += ["", f"{report['task']['n_train']} training examples, "
              f"{report['history'][-1]['epoch']:.0f} epochs, {report['seconds']:.0f} s; "
              f"{report['trainable_parameters']:,} trainable parameters, adapter "
              f"{report['adapter_bytes'] / 2**20:.1f} MiB.", "",
              "Validation ROUGE-L by epoch: " + ", ".join(
                  f"{h['epoch']:.0f}: {h['rouge_l']:.3f}" for h in report["history"]), "",
              "Outputs for hand-written inputs:", ""]
    lines += [f"- `{e['input']}` -> {e['output']}" for e in report["outputs"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
