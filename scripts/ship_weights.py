#!/usr/bin/env python
"""Copy a trained generation checkpoint to where `avgen generate` finds it, with its sampler defaults set.

    python scripts/ship_weights.py runs/tiny/model-flow-2000.safetensors avgen/weights/tiny.safetensors \
        --cfg 4 --shift 3 [--chunk-seconds 4 --overlap-seconds 0.4]

The tensors are copied unchanged; only the config in the metadata gets the given sampler defaults
(chosen with scripts/tune_sampler.py), and the metadata records the source file's hash.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_BYTES = 30 * 2**20


def main() -> None:
    from avgen.checkpoint import file_hash, load_checkpoint, read_metadata, save_checkpoint

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg", type=float)
    p.add_argument("--shift", type=float)
    p.add_argument("--sampler", choices=("euler", "heun"))
    p.add_argument("--chunk-seconds", type=float, help="generation chunk length (the model's window is local)")
    p.add_argument("--overlap-seconds", type=float, help="context each later chunk holds from the one before")
    p.add_argument("--self-reference-over-seconds", type=float,
                   help="without a reference image, clips longer than this take their first second's face")  # fmt: skip
    args = p.parse_args()

    size = Path(args.source).stat().st_size  # the tensors are copied unchanged: the size barely moves
    if size > MAX_BYTES:
        raise SystemExit(f"{args.source} is {size / 2**20:.1f} MiB; the limit for shipped weights is 30 MiB")
    model = load_checkpoint(args.source)
    changes = {
        k: getattr(args, k)
        for k in ("steps", "cfg", "shift", "sampler", "chunk_seconds", "overlap_seconds", "self_reference_over_seconds")
        if getattr(args, k) is not None
    }
    fields = {"guidance" if k == "cfg" else k: v for k, v in changes.items()}  # --cfg is the guidance scale
    model.cfg = dataclasses.replace(model.cfg, **fields)
    meta = {k: v for k, v in read_metadata(args.source).items() if k not in ("format", "config")}
    meta["shipped_from"] = f"{Path(args.source).name} sha256 {file_hash(args.source)}"
    meta["sampler_defaults"] = json.dumps(changes)
    save_checkpoint(model, args.target, metadata=meta)
    before, after = load_file(args.source), load_file(args.target)
    assert before.keys() == after.keys() and all(before[k].equal(after[k]) for k in before), "tensors changed"
    size = Path(args.target).stat().st_size
    print(f"{args.target}: {size / 2**20:.1f} MiB, sampler defaults {changes or 'unchanged'}")


if __name__ == "__main__":
    main()
