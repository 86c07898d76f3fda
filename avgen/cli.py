"""The `avgen` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from avgen.timeline import FPS

EXIT_USAGE, EXIT_FAILED = 2, 1


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line instead of the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _add_generate(sub) -> None:
    from avgen.pipeline import MAX_SECONDS

    p = sub.add_parser(
        "generate",
        help="generate a talking-head MP4 from a transcript or speech",
        description="Generate a talking-head MP4 (H.264 + AAC) from a transcript, "
        "optionally driven by a speech file and/or a reference face picture.",
    )
    p.add_argument("--text", default="", help="what the face says")
    p.add_argument(
        "--seconds", type=float, help=f"clip length (default: as long as the text takes; max {MAX_SECONDS:g})"
    )
    p.add_argument("--out", required=True, help="output .mp4 path")
    p.add_argument("--seed", type=int, default=0, help="same seed and settings give the same clip (default 0)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the checkpoint's)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance on the transcript (default: the checkpoint's)")
    p.add_argument("--sampler", choices=("euler", "heun"), help="ODE sampler (default: the checkpoint's)")
    p.add_argument("--shift", type=float, help="timestep shift, >1 spends more steps at high noise")
    p.add_argument("--reference-image", help="a face picture whose identity to keep")
    p.add_argument("--audio", help="speech file to drive the video (wav, flac, mp3, m4a, mp4...); kept in the output")
    p.add_argument("--checkpoint", help="model checkpoint (.safetensors; default: the shipped weights)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads; fixed so results repeat (default 2)")
    p.add_argument("--json", action="store_true", help="print the result's metadata as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_generate(args) -> int:
    import torch

    from avgen.media import check_writable, read_audio, read_image
    from avgen.pipeline import GenerationRequest, Generator, write_stream
    from avgen.progress import ProgressBar

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, not {args.threads}")
    if args.device != "cpu":
        if not args.device.startswith("cuda"):
            raise ValueError(f"--device must be cpu, cuda or cuda:N, not {args.device!r}")
        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    torch.set_num_threads(args.threads)
    check_writable(args.out)  # fail before minutes of work, not after
    request = GenerationRequest(
        text=args.text, seconds=args.seconds, steps=args.steps, guidance=args.cfg, shift=args.shift,
        sampler=args.sampler, seed=args.seed,
        reference_image=read_image(args.reference_image) if args.reference_image else None,
        audio=read_audio(args.audio) if args.audio else None,
    )  # fmt: skip
    started = time.monotonic()
    notices: list[str] = []
    generator = Generator.load(args.checkpoint, device=args.device, seed=args.seed, warn=notices.append)
    # A bad request fails in `open`, before the untrained-model notice, the progress bar and any work.
    result = generator.open(request, None if args.quiet else lambda fraction, message: bar(fraction, message))
    for notice in notices:
        print(notice, file=sys.stderr)
    bar = ProgressBar("generate")
    write_stream(result, args.out)  # frames and audio go to the MP4 as chunks finish
    elapsed = time.monotonic() - started
    summary = {
        "out": os.path.abspath(args.out),
        "frames": result.frames,
        "seconds": result.seconds,
        "fps": FPS,
        "height": result.height,
        "width": result.width,
        "elapsed_s": round(elapsed, 3),
        "real_time_factor": round(result.seconds / elapsed, 3),
        "trained": generator.trained,
        **{k.removeprefix("avgen_"): v for k, v in result.metadata.items() if k.startswith("avgen_")},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        print(f"wrote {args.out}: {summary['seconds']:g} s in {elapsed:.1f} s", file=sys.stderr)
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score lip-sync and flicker of clips (ours or any model's)",
        description="Score lip-sync (SyncNet protocol) and flicker of video clips. "
        "Writes DIR/results.json, DIR/results.csv and DIR/plots/*.png; prints a summary.",
    )
    p.add_argument("paths", nargs="+", help="video files, folders of videos, or manifest files (.txt, one path a line)")
    p.add_argument(
        "--backend",
        choices=("landmarks", "syncnet", "learned"),
        default="landmarks",
        help="sync scorer (default landmarks: no weight file needed)",
    )
    p.add_argument("--out", default="eval_results", help="results folder (default eval_results); reruns resume")
    p.add_argument("--syncnet-weights", help="the published syncnet_v2.model (for --backend syncnet)")
    p.add_argument(
        "--face-crop",
        choices=("reference", "none"),
        default="reference",
        help="syncnet: detect and crop the face as the reference pipeline does, or score 224x224 face tracks as given",
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_eval(args) -> int:
    import torch

    from avgen.progress import ProgressBar
    from eval.run import EvalSettings, evaluate, summary_table

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, not {args.threads}")
    torch.set_num_threads(args.threads)
    settings = EvalSettings(backend=args.backend, face_crop=args.face_crop, syncnet_weights=args.syncnet_weights)
    rows = evaluate(args.paths, args.out, settings, progress=None if args.quiet else ProgressBar("eval"))
    print(summary_table(rows))
    for row in rows:
        if row.get("error"):
            print(f"error: {row['path']}: {row['error']}", file=sys.stderr)
    print(
        f"results: {os.path.join(args.out, 'results.json')}, {os.path.join(args.out, 'results.csv')}, "
        f"{os.path.join(args.out, 'plots')}/",
        file=sys.stderr,
    )
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the codecs, then the model, on the synthetic corpus",
        description="Train a stage from a TOML config plus key=value overrides; "
        "rerunning the same command resumes from its last checkpoint.",
    )
    p.add_argument("stage", choices=("codecs", "model"))
    p.add_argument("--config", help="TOML file of training settings (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. steps=2000 objective=flow out=runs/x")


def cmd_train(args) -> int:
    import torch

    from avgen.train import load_config, train_codecs, train_model

    cfg = load_config(args.config, args.overrides, args.stage)
    torch.set_num_threads(cfg.threads)
    path = train_codecs(cfg) if cfg.stage == "codecs" else train_model(cfg)
    print(path)
    return 0


def _add_corpus(sub) -> None:
    p = sub.add_parser(
        "corpus",
        help="write synthetic talking-head clips (MP4 + JSON) to look at or score",
        description="Write clips of the synthetic training corpus: drawn faces saying generated "
        "sentences with synthesised speech, lip-synced by construction. Each clip is DIR/NNNN.mp4 "
        "(H.264 + AAC) with DIR/NNNN.json (transcript, phone timeline, identity, sentence, split, seed).",
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--clips", type=int, required=True, help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="corpus seed: same seed, same clips (default 0)")
    p.add_argument(
        "--split",
        choices=("train", "heldout"),
        default="train",
        help="heldout: identities and sentences that no train clip has (default train)",
    )
    p.add_argument("--seconds", type=float, help="clip length (default: each sentence's natural length)")
    p.add_argument("--size", type=int, default=64, help="frame width and height in pixels, even (default 64)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_corpus(args) -> int:
    from avgen.data.corpus import corpus_main
    from avgen.progress import ProgressBar

    started = time.monotonic()
    paths = corpus_main(
        args.out,
        args.clips,
        args.seed,
        args.split,
        args.seconds,
        size=args.size,
        progress=None if args.quiet else ProgressBar("corpus"),
    )
    print(f"wrote {len(paths)} clips (MP4 + JSON) to {args.out} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def _add_serve(sub) -> None:
    from api.config import parse_duration, parse_size

    p = sub.add_parser(
        "serve",
        help="run the HTTP API (jobs, uploads, events) over a job store in --data-dir",
        description="Run the HTTP API. Jobs and uploads live under --data-dir (jobs.sqlite3, uploads/, results/). "
        "API keys: --api-keys-file (one a line) or AVGEN_API_KEYS (comma-separated); without keys one anonymous "
        "caller, allowed only on a loopback host unless --insecure.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--data-dir", default="./avgen-data", help="folder of the job store and files (default ./avgen-data)"
    )
    p.add_argument(
        "--workers",
        default="auto",
        help="worker pool size: N, auto, or 0 for none (API only: jobs stay queued for a pool elsewhere)",
    )
    p.add_argument("--api-keys-file", help="file with one API key a line")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback host without API keys")
    p.add_argument(
        "--threads", type=int, help="torch threads per worker; with --workers auto on CPU, CPUs per worker (default 2)"
    )
    p.add_argument("--max-attempts", type=int, help="runs of a job whose worker dies before it fails (default 3)")
    p.add_argument("--checkpoint", help="model checkpoint for the workers (.safetensors; default: the shipped weights)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when the Ray cluster has GPUs, else cpu)")
    p.add_argument(
        "--retention",
        type=_typed(parse_duration),
        help="results and uploads are deleted this long after the job finished / the upload: 7d, 12h, 30m, 3600 "
        "(seconds) (default 7d, or AVGEN_RETENTION)",
    )
    p.add_argument(
        "--max-disk",
        type=_typed(parse_size),
        help="cap on uploads + results: 500M, 10G...; over it the oldest go first (default: no cap, or AVGEN_MAX_DISK)",
    )
    p.add_argument(
        "--grace-seconds",
        type=float,
        help="on SIGTERM, running jobs get this long to finish, then go back to the queue (default 30)",
    )


def _typed(parse):
    """An argparse type from a parser that raises ValueError: its message becomes the one-line usage error."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def _start_pool(config, store, artifacts):
    """The worker pool when workers.pool provides start_pool; None (jobs stay queued) when it does not."""
    try:
        from workers.pool import start_pool
    except ImportError:
        print("avgen serve: no worker pool (workers.pool.start_pool missing): jobs stay queued", file=sys.stderr)
        return None
    return start_pool(config, store, artifacts)


def cmd_serve(args) -> int:
    from pathlib import Path

    import uvicorn

    from api.app import create_app
    from api.artifacts import Artifacts
    from api.config import ServiceConfig
    from api.store import JobStore

    config = ServiceConfig.from_env(
        args.api_keys_file,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        insecure=args.insecure,
        workers=args.workers,
        threads=args.threads,
        max_attempts=args.max_attempts,
        checkpoint=args.checkpoint,
        device=args.device,
        retention_seconds=args.retention,
        max_disk_bytes=args.max_disk,
        grace_seconds=args.grace_seconds,
    )
    if config.checkpoint is not None and not Path(config.checkpoint).is_file():
        raise ValueError(f"--checkpoint {config.checkpoint}: no such file")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with JobStore(config.data_dir / "jobs.sqlite3") as store:
        artifacts = Artifacts(config.data_dir)
        pool = None if config.workers == "0" else _start_pool(config, store, artifacts)
        app = create_app(config, store, artifacts, pool)
        url = f"http://{config.host}:{config.port}"
        auth = " -H 'Authorization: Bearer $KEY'" if config.api_keys else ""
        print(f"avgen serve: {url} (data in {config.data_dir})", file=sys.stderr)
        print(f"  try: curl -X POST {url}/v1/jobs{auth} -H 'Content-Type: application/json' "
              """-d '{"kind": "generate", "text": "hello there"}'""", file=sys.stderr)  # fmt: skip
        server = uvicorn.Server(
            uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=5)
        )
        server.run()  # uvicorn handles SIGINT/SIGTERM: stops accepting, gives requests (and open event streams) 5 s, runs the lifespan end
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="avgen", description="Joint audio-video generation: talking heads from text.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_generate(sub)
    _add_eval(sub)
    _add_train(sub)
    _add_corpus(sub)
    _add_serve(sub)
    return parser


COMMANDS = {"generate": cmd_generate, "eval": cmd_eval, "train": cmd_train, "corpus": cmd_corpus, "serve": cmd_serve}


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: temporary files are removed on the way out


def main(argv: list[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # SIGTERM's default would skip all cleanup
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `avgen train model --config F key=value ...`: overrides after the options
        if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("avgen: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # MediaError, GenerationError, CheckpointError are ValueErrors
        if os.environ.get("AVGEN_DEBUG"):
            raise
        message = " ".join(str(e).split())
        print(f"avgen: error: {message}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
