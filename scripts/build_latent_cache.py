#!/usr/bin/env python
"""The latent cache of one training configuration, built once and copied to other runs' folders
(the GPU-session scripts: several trainings of the same windows on one machine).

    python scripts/build_latent_cache.py [--copy-to RUN_DIR ...] KEY=VALUE ...

KEY=VALUE are `avgen train model` overrides of configs/tiny.toml (out=, corpus_clips=, codecs=, ...);
the cache is built on the CPU as train_model builds it (render workers: data_workers=N) into `out`.
A file, not stdin: the render workers are spawned processes that import it.
"""

import argparse
import shutil
from pathlib import Path

if __name__ == "__main__":
    from avgen.checkpoint import load_checkpoint
    from avgen.train import CODECS, _cache_path, absolute_paths, build_latent_cache, load_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copy-to", nargs="*", default=[], help="run folders that get a copy of the cache")
    args, overrides = p.parse_known_args()
    cfg = absolute_paths(load_config("configs/tiny.toml", overrides, "model"))
    cache = _cache_path(cfg)
    build_latent_cache(cfg, load_checkpoint(cfg.codecs, only=CODECS), cache)
    for run in args.copy_to:
        Path(run).mkdir(parents=True, exist_ok=True)
        shutil.copy(cache, Path(run) / cache.name)
