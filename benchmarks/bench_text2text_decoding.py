"""Test scores of one saved text2text adapter under several decodings: greedy search (the
product's default) and beam search (``--num-beams`` / ``TrainConfig.num_beams``), with and
without blocking repeated trigrams. Same test inputs, same references, same metrics as
``bench_text2text_learns.py`` (which saves the adapter with ``--save-adapter``); only the
decoding changes, so the differences are the decoding's alone.

    python benchmarks/bench_text2text_decoding.py ADAPTER
        [--task ../shared/bench-data-text2text/e2e_nlg] [--base-model .bench-cache/minilm2minilm]
        [--max-train 4000] [--max-eval 200] [--max-length 64] [--max-new-tokens 40]
        [--beams 1,4] [--seed 0] [--out benchmarks/results/text2text/decoding.json]

``--max-train``/``--max-eval``/``--seed`` must be the training run's, so that the test draw is
the same. Writes ``--out`` (scores and seconds per decoding; no texts: the data's stay out of the
repository).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import PeftModel

from adapterpool.models.build import base_classifier, load_preprocessor
from adapterpool.tasks import load_task
from adapterpool.training.encoding import EncodedRecords
from adapterpool.training.generation import (
    DecodingConfig,
    decoding_for,
    generate_texts,
    reference_texts,
    text_scores,
    trivial_baselines,
)
from adapterpool.verbosity import quiet_third_party

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Decoding(DecodingConfig):
    """The product's decoding plus transformers' repeated-n-gram block (0: off)."""

    no_repeat_ngram_size: int = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter")
    parser.add_argument("--task", default=str(ROOT.parent / "shared/bench-data-text2text/e2e_nlg"))
    parser.add_argument("--base-model", default=str(ROOT / ".bench-cache/minilm2minilm"))
    parser.add_argument("--max-train", type=int, default=4000)
    parser.add_argument("--max-eval", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--beams", default="1,4", help="beam counts, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/text2text/decoding.json"))
    args = parser.parse_args()
    quiet_third_party()
    task = load_task(args.task, max_train=args.max_train, max_eval=args.max_eval, seed=args.seed)
    tokenizer = load_preprocessor(args.base_model, "text2text")
    model = PeftModel.from_pretrained(base_classifier(args.base_model, [], "text2text"),
                                      args.adapter).eval()
    data = EncodedRecords(task.test, tokenizer, args.max_length)
    references = reference_texts(data, tokenizer)
    results = {}
    for beams in (int(b) for b in args.beams.split(",")):
        for block in (0, 3):
            base = decoding_for(args.max_new_tokens, beams)
            decoding = replace(Decoding(**vars(base)), no_repeat_ngram_size=block)
            name = f"beams={beams}" + (f", no repeated {block}-grams" if block else "")
            start = time.perf_counter()
            outputs = generate_texts(model, data, tokenizer, decoding=decoding)
            results[name] = text_scores(references, outputs) | {
                "seconds": time.perf_counter() - start, "decoding": decoding.as_kwargs()}
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items()
                                          if isinstance(v, float)), flush=True)
    report = {"adapter": str(args.adapter), "task": Path(args.task).name,
              "test_inputs": len(data), "settings": vars(args), "threads": torch.get_num_threads(),
              "trivial": trivial_baselines(task.test, tokenizer, args.max_length,
                                           task.train.target),
              "decodings": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
