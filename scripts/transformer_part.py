#!/usr/bin/env python
"""A generation checkpoint's transformer alone, in bf16, and back: how a larger transformer trained on
a device fits in what a device call returns (scripts/gpu_mouth.sh), its codecs being the teacher's.

    python scripts/transformer_part.py extract runs/x/model-flow-1500.safetensors x.transformer.safetensors
    python scripts/transformer_part.py rebuild x.transformer.safetensors avgen/weights/teacher/tiny.safetensors x.safetensors

`extract` keeps the transformer's tensors (cast to bf16) and the metadata, config included; `rebuild`
puts them (back in fp32) beside the codecs of a checkpoint made with the same codec settings and
writes a generation checkpoint `avgen generate --checkpoint` and scripts/make_results.py read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PART = "transformer_part"


def extract(source: str, target: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from avgen.checkpoint import read_metadata

    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(source).items() if k.startswith("transformer.")}
    if not tensors:
        raise SystemExit(f"{source} has no transformer tensors")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, target, metadata={**read_metadata(source), PART: "bf16"})


def rebuild(part: str, codecs: str, target: str) -> None:
    from avgen.checkpoint import load_checkpoint, read_metadata, save_checkpoint
    from avgen.config import SAMPLER_FIELDS

    metadata = read_metadata(part)
    if metadata.get(PART) != "bf16":
        raise SystemExit(f"{part} is not a transformer part written by `extract`")
    transformer = load_checkpoint(part, only=("transformer",)).transformer
    model = load_checkpoint(codecs)
    # the transformer's own shape and the sampler may differ; every other setting belongs to the codecs
    differ = model.cfg.differing(transformer.cfg, free={"hidden", "depth", "heads", "mlp_ratio"} | SAMPLER_FIELDS)
    if differ:
        raise SystemExit(f"{codecs} has other codec settings than {part} was trained on: {', '.join(differ)}")
    model.cfg, model.transformer = transformer.cfg, transformer.float()
    del metadata[PART]
    save_checkpoint(model, target, metadata={k: v for k, v in metadata.items() if k not in ("format", "config")})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("extract", help="a checkpoint's transformer alone, in bf16")
    e.add_argument("source")
    e.add_argument("target")
    r = sub.add_parser("rebuild", help="a transformer part beside another checkpoint's codecs")
    r.add_argument("part")
    r.add_argument("codecs")
    r.add_argument("target")
    args = p.parse_args(argv)
    if args.command == "extract":
        extract(args.source, args.target)
    else:
        rebuild(args.part, args.codecs, args.target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
