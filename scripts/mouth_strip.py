#!/usr/bin/env python
"""A picture of the generated mouth against what it should be: frames of one corpus clip as ground
truth, as ground truth through the video codec (what the latent space keeps), and as generated at
each guidance scale given (same transcript, length, reference frame and seed as scripts/make_results.py).

    python scripts/mouth_strip.py --checkpoint avgen/weights/teacher/tiny.safetensors --steps 8 \
        --guidance 1 3 --clip 3 --out docs/results/mouth_guidance.jpg

One row each, frames evenly spaced over the clip, the transcript printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results.common import SPLIT_NAMES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="model checkpoint (default: the shipped weights)")
    p.add_argument("--split", choices=tuple(SPLIT_NAMES), default="heldout", help="corpus split (default heldout)")
    p.add_argument("--clip", type=int, default=0, help="corpus clip index (default 0)")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0], help="one row per guidance scale")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    p.add_argument("--frames", type=int, default=15, help="frames shown per row (default 15)")
    p.add_argument("--out", required=True, help="image file (.jpg or .png)")
    args = p.parse_args(argv)
    if Path(args.out).suffix.lower() not in (".jpg", ".jpeg", ".png"):
        p.error(f"--out {args.out}: an image file name ends in .jpg, .jpeg or .png")
    import cv2
    import torch
    from results.clips import generation_request

    from avgen.checkpoint import default_checkpoint
    from avgen.data.corpus import make_sample
    from avgen.pipeline import Generator

    torch.set_num_threads(2)
    sample = make_sample(args.clip, split=args.split, seed=0)
    generator = Generator.load(args.checkpoint or default_checkpoint())
    with torch.no_grad():
        codec = generator.model.video_codec.round_trip(torch.from_numpy(sample.frames)).numpy()
    rows = [sample.frames, codec]
    for guidance in args.guidance:
        request = generation_request(sample, args.clip, steps=args.steps, guidance=guidance, shift=1.0)
        rows.append(generator.generate(request).frames)
    picks = np.linspace(0, len(sample.frames) - 1, args.frames).round().astype(int)
    image = np.concatenate([np.concatenate([row[i] for i in picks], axis=1) for row in rows], axis=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(args.out, np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92]):
        p.error(f"cannot write {args.out}")
    labels = ["ground truth", "through the video codec"] + [f"generated, guidance {g:g}" for g in args.guidance]
    print(f'{args.out}: "{sample.text}", frames {", ".join(map(str, picks))}; rows: {"; ".join(labels)}')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
