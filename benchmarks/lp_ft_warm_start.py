"""One warm start whose fresh head is first fitted to the transferred features (LP-FT: logistic
regression on the training split's pooled features, then fine-tuning as the ground truth does),
to compare with the family ground truth's fresh-head warm start of the same source and seed.

    PYTHONPATH=src python benchmarks/lp_ft_warm_start.py TARGET SOURCE_TASK SEED

TARGET is a ``../shared/bench-data`` folder name, SOURCE_TASK a pool member's task name in
``benchmarks/family/run/pool``. Prints the head's training accuracy, then the validation curve
(two evaluations an epoch, the first before any step) and the test accuracy as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from accelerate.utils import set_seed
from sklearn.linear_model import LogisticRegression

from adapterpool.bench.config import BenchConfig
from adapterpool.bench.ground_truth import ground_truth_config
from adapterpool.bench.harness import BenchRun
from adapterpool.models.build import load_tokenizer
from adapterpool.models.heads import head_module
from adapterpool.models.warm_start import warm_start_model
from adapterpool.ranking.scoring import candidate_outputs
from adapterpool.training.encoding import EncodedRecords
from adapterpool.training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("source_task")
    parser.add_argument("seed", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = BenchRun(BenchConfig.from_file("benchmarks/family/config.json"), show_progress=False,
                   measure_energy=False)
    pool = run.open_pool()
    record = next(r for r in pool.list() if r.task_name == args.source_task)
    task = run._task(f"../shared/bench-data/{args.target}", max_test=run.config.max_test)
    tokenizer = load_tokenizer(pool.base_model)
    set_seed(args.seed)
    model = warm_start_model(pool.base_model, task.label_names, pool.adapter_dir(record.id))
    started = time.process_time()
    outputs = candidate_outputs(model, EncodedRecords(task.train, tokenizer,
                                                      run.config.max_length), tokenizer)
    labels = np.asarray(task.train.label)
    probe = LogisticRegression(max_iter=1000).fit(outputs.features, labels)
    head = head_module(model)
    head = head.modules_to_save["default"] if hasattr(head, "modules_to_save") else head
    with torch.no_grad():
        weight = torch.as_tensor(probe.coef_, dtype=head.weight.dtype)
        bias = torch.as_tensor(probe.intercept_, dtype=head.bias.dtype)
        if weight.shape[0] == 1:  # two classes: one row of log-odds
            weight, bias = torch.cat([-weight / 2, weight / 2]), torch.cat([-bias / 2, bias / 2])
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    print(f"head fitted in {time.process_time() - started:.1f} CPU s, training accuracy "
          f"{probe.score(outputs.features, labels):.3f}", flush=True)
    config = ground_truth_config(run, args.seed, run.config.ground_truth_max_epochs)
    result = train(model, task, tokenizer, config, show_progress=False, measure_energy=False,
                   eval_at_start=True)
    print(json.dumps({"validation": result.validation["accuracy"],
                      "test": (result.test or {}).get("accuracy"), "epochs": result.epochs_run,
                      "curve": [(h["epoch"], round(h["accuracy"], 3)) for h in result.history]}))


if __name__ == "__main__":
    main()
