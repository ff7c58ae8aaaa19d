"""Make the family benchmark's run committable: fold the Ray workers' part files into
``state.json``, put the committed config back into it (a run started from a copy of the config,
e.g. with ``"peers": []``, records that copy), and checkpoint the pool catalog's SQLite WAL so the
committed ``catalog.sqlite`` holds everything. Stop the run first (``pkill -f "adapterpool.cli.main
bench"``: at most the units in progress are lost), then

    PYTHONPATH=src python benchmarks/family_fold.py
    adapterpool pool verify benchmarks/family/run/pool
"""

import sqlite3
from pathlib import Path

from adapterpool.bench.config import BenchConfig
from adapterpool.bench.state import BenchState

CONFIG = Path("benchmarks/family/config.json")


def main() -> None:
    config = BenchConfig.from_file(CONFIG)
    run = Path(config.run_dir)
    state = BenchState(run / "state.json")
    state.fold_parts()  # merges into state.data, so the config goes on top of the folded units
    state.put(config.as_dict(), "config")
    with sqlite3.connect(run / "pool" / "catalog.sqlite") as catalog:
        catalog.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"folded {run / 'state.json'}; config from {CONFIG}; pool catalog checkpointed")


if __name__ == "__main__":
    main()
