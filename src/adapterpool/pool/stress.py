"""A writer process for stress tests and benchmarks: adds perturbed copies of one adapter to a
pool (``python -m adapterpool.pool.stress POOL SOURCE WORKER COUNT``; COUNT -1 = until killed).
Prints 'ready' once imports are done and the checks are warm (the base model built once for the
shape check), so that a kill after 'ready' lands among adds, then one line per add."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from adapterpool.pool.checks import validate_adapter_dir
from adapterpool.pool.store import AdapterPool


def main(pool_path: str, source: str, worker: int, count: int) -> None:
    pool = AdapterPool(pool_path)
    state = load_file(Path(source) / "adapter_model.safetensors")
    key = next(k for k in sorted(state) if "lora_B" in k)
    validate_adapter_dir(Path(source), base_model=pool.base_model,
                         meta=json.loads((Path(source) / "adapterpool.json").read_text()),
                         expected_shapes=pool.shape_check)
    print("ready", flush=True)
    i = 0
    while count < 0 or i < count:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "a"
            shutil.copytree(source, folder)
            perturbed = dict(state)
            perturbed[key] = state[key] + (worker * 100_000 + i + 1) * 1e-4
            save_file(perturbed, folder / "adapter_model.safetensors")
            record = pool.add(folder)
        print("added", record.id, flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
