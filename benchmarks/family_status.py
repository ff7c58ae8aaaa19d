"""Where the family bench stands: units recorded and still to do, from its state alone.

    PYTHONPATH=src python benchmarks/family_status.py [--config benchmarks/family/config.json]

Prints sources trained (of the pool's members), then per target which ground-truth units are
recorded (scores, reference, baseline seeds, chosen warm starts x seeds, peers x seeds, loop runs
of each strategy x seed), and the
recorded seconds per epoch, so a session can size the part it runs next.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adapterpool.bench.config import BenchConfig
from adapterpool.bench.harness import task_key
from adapterpool.bench.state import read_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/family/config.json")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = BenchConfig.from_file(args.config)
    state = read_state(Path(config.run_dir) / "state.json")
    sources = [task_key(s) for s in config.all_sources()]
    done = state.get("sources") or {}
    per_epoch = [v["train_seconds"] / v["epochs"] for v in done.values() if v.get("epochs")]
    seeds = [str(s) for s in config.ground_truth_seeds]
    plan = config.ground_truth_candidates or {}
    targets = {}
    for spec in config.all_targets():
        key = task_key(spec)
        t = (state.get("targets") or {}).get(key) or {}
        chosen = t.get("gt_candidates") or {}
        # the recorded choice (score_top may coincide with the others), else the plan's counts
        n_candidates = (len({*chosen.get("prefilter_top", []), *chosen.get("random", []),
                             *chosen.get("score_top", [])}) if chosen else sum(plan.values()))
        targets[key] = {
            "scores": t.get("scores") is not None,
            "reference": t.get("reference") is not None,
            "baseline_seeds": sum(s in (t.get("gt_baseline") or {}) for s in seeds),
            "warm_starts": sum(len(v) for v in (t.get("gt_finetune") or {}).values()),
            "warm_starts_planned": n_candidates * len(seeds),
            "peers": sum(len(v) for v in (t.get("peers") or {}).values()),
            "peers_planned": len(config.peers) * len(seeds),
            "loop_runs": sum(len(v) for v in (t.get("strategies") or {}).values()),
            "loop_runs_planned": len(config.strategies) * len(config.strategy_seeds),
        }
    out = {"sources_done": len(done), "sources": len(sources),
           "missing_sources": [s for s in sources if s not in done],
           "source_seconds_per_epoch": (sum(per_epoch) / len(per_epoch)) if per_epoch else None,
           "source_epochs": {k: v.get("epochs") for k, v in done.items()},
           "targets": targets}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"sources: {out['sources_done']} of {out['sources']} trained"
          + (f", {out['source_seconds_per_epoch']:.0f} s an epoch on average"
             if per_epoch else ""))
    for key, t in targets.items():
        print(f"  {key:24s} scores {'yes' if t['scores'] else 'no':3s}  baseline seeds "
              f"{t['baseline_seeds']}/{len(seeds)}  warm starts {t['warm_starts']}/"
              f"{t['warm_starts_planned']}  peers {t['peers']}/{t['peers_planned']}  loop runs "
              f"{t['loop_runs']}/{t['loop_runs_planned']}")


if __name__ == "__main__":
    main()
