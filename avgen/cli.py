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
    from avgen.limits import MAX_SECONDS

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
    p.add_argument("--vocoder", choices=("learned", "griffin-lim"),
                   help="mel to waveform: the learned vocoder (default) or Griffin-Lim")  # fmt: skip
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
        sampler=args.sampler, seed=args.seed, vocoder=args.vocoder,
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
        "--learned-weights",
        help="for --backend learned: another weight file (default: the shipped eval/weights/learned_sync.safetensors)",
    )
    p.add_argument(
        "--face-crop",
        choices=("reference", "none"),
        default="reference",
        help="syncnet: detect and crop the face as the reference pipeline does, or score 224x224 face tracks as given",
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--server",
        nargs="?",
        const=os.environ.get("AVGEN_SERVER") or "",
        help="score on this avgen server's workers instead (one batch; --backend landmarks or learned); "
        "the results come back to --out as a local run writes them. --server alone: $AVGEN_SERVER "
        "(eval runs here unless --server is given, even with AVGEN_SERVER set)",
    )
    p.add_argument("--api-key", default=os.environ.get("AVGEN_API_KEY"), help="with --server (default $AVGEN_API_KEY)")


def cmd_eval(args) -> int:
    import torch

    from avgen.progress import ProgressBar
    from eval.run import EvalSettings, evaluate, summary_table

    if args.server is not None:
        if not args.server:
            raise ValueError("--server without a URL needs AVGEN_SERVER set")
        rows = eval_remote(args)
    else:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, not {args.threads}")
        torch.set_num_threads(args.threads)
        settings = EvalSettings(backend=args.backend, face_crop=args.face_crop, syncnet_weights=args.syncnet_weights,
                                learned_weights=args.learned_weights)  # fmt: skip
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


# --- the client of a server: submit, jobs, batch, eval --server (avgen/client.py) ---

SERVER_HELP = "the avgen server, e.g. http://127.0.0.1:8000 (default $AVGEN_SERVER)"
REMOTE_COMMANDS = ("submit", "jobs", "batch")  # need a server; `eval` only with --server


def _add_server_options(p) -> None:
    p.add_argument("--server", default=os.environ.get("AVGEN_SERVER"), help=SERVER_HELP)
    p.add_argument("--api-key", default=os.environ.get("AVGEN_API_KEY"), help="API key (default $AVGEN_API_KEY)")


def _connect(args):
    from avgen.client import Client

    return Client(args.server, args.api_key)


def _add_submit(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="submit a generate job to an avgen server (optionally wait and download the MP4)",
        description="Upload the files, submit a generate job and print its id (--json: the job). "
        "--wait follows it with a progress bar; --out also downloads the MP4.",
    )
    p.add_argument("--text", default="", help="what the face says")
    p.add_argument("--seconds", type=float, help="clip length (default: as long as the text takes)")
    p.add_argument("--seed", type=int, default=0, help="same seed and settings give the same clip (default 0)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the server checkpoint's)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance on the transcript")
    p.add_argument("--sampler", choices=("euler", "heun"), help="ODE sampler")
    p.add_argument("--shift", type=float, help="timestep shift")
    p.add_argument("--reference-image", help="a face picture whose identity to keep (uploaded)")
    p.add_argument("--audio", help="speech file to drive the video (uploaded; kept in the output)")
    p.add_argument("--no-score", action="store_true", help="skip the lip-sync and flicker scores")
    _add_server_options(p)
    p.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    p.add_argument("--out", help="download the MP4 here once it is done (implies --wait)")
    p.add_argument("--json", action="store_true", help="print the job object as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _job_failure(job: dict) -> str:
    detail = (job.get("error") or {}).get("detail")
    return f"job {job['id']} {job['status']}" + (f": {detail}" if detail else "")


def cmd_submit(args) -> int:
    import uuid
    from pathlib import Path

    from avgen.media import check_writable
    from avgen.progress import ProgressBar

    files = {"reference_image": args.reference_image, "audio": args.audio}
    for field, path in files.items():
        if path and not Path(path).is_file():
            raise ValueError(f"--{field.replace('_', '-')} {path}: no such file")
    if args.out:
        check_writable(args.out)  # before the upload and the wait, not after
    options = {"seconds": args.seconds, "steps": args.steps, "cfg": args.cfg, "sampler": args.sampler,
               "shift": args.shift}  # fmt: skip
    body = {"kind": "generate", "text": args.text, "seed": args.seed}
    body |= {k: v for k, v in options.items() if v is not None} | ({"score": False} if args.no_score else {})
    with _connect(args) as client:
        body |= {field: client.upload(path)["id"] for field, path in files.items() if path}
        # one key per invocation: a retry after a network error returns the job the first try made
        job = client.submit(body, idempotency_key=f"avgen-submit-{uuid.uuid4().hex}")
        if not (args.wait or args.out):
            print(json.dumps(client.get(job["id"]), indent=2) if args.json else job["id"])
            return 0
        if not args.quiet:
            print(f"job {job['id']} submitted", file=sys.stderr)
        bar = None if args.quiet else ProgressBar(f"job {job['id'][:8]}")
        try:
            job = client.wait(job["id"], bar)
        except KeyboardInterrupt:
            print(f"avgen: the job goes on on the server (avgen jobs cancel {job['id']} stops it)", file=sys.stderr)
            raise
        if args.json:
            print(json.dumps(job, indent=2))
        if job["status"] != "succeeded":
            raise ValueError(_job_failure(job))
        if bar is not None:
            bar(1.0, "succeeded")
        if args.out:
            client.download(job["id"], args.out)
            if not args.quiet:
                print(f"wrote {args.out}", file=sys.stderr)
        elif not args.json:
            print(job["id"])
    return 0


def _add_jobs(sub) -> None:
    p = sub.add_parser(
        "jobs",
        help="list your jobs on an avgen server; `jobs show ID`, `jobs cancel ID...`",
        description="avgen jobs: a table of your jobs, newest first (batches, not their items). "
        "avgen jobs show ID: one job as JSON. avgen jobs cancel ID...: cancel jobs (a batch: all its items).",
    )
    p.add_argument("action", nargs="*", metavar="[show|cancel ID...]", help="default: list")
    p.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "canceled", "expired"))
    p.add_argument("--kind", choices=("generate", "evaluate", "batch"))
    p.add_argument("--limit", type=int, default=20, help="at most this many jobs (default 20)")
    _add_server_options(p)
    p.add_argument("--json", action="store_true", help="print the jobs as JSON on stdout")


def _jobs_table(jobs: list[dict]) -> str:
    rows = [("ID", "KIND", "STATUS", "PROGRESS", "CREATED")]
    for job in jobs:
        children = job.get("children")
        if children:
            done = sum(n for s, n in children.items() if s not in ("total", "queued", "running"))
            progress = f"{done}/{children['total']}"
        else:
            progress = f"{job['progress']:.0%}"
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created_at"]))
        rows.append((job["id"], job["kind"], job["status"], progress, created))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_jobs(args) -> int:
    action, ids = (args.action[0], args.action[1:]) if args.action else ("list", [])
    with _connect(args) as client:
        if action == "list":
            if args.limit < 1:
                raise ValueError(f"--limit must be at least 1, not {args.limit}")
            jobs = client.list(status=args.status, kind=args.kind, limit=args.limit)
            print(json.dumps(jobs, indent=2) if args.json else _jobs_table(jobs) if jobs else "no jobs")
        elif action == "show":
            jobs = [client.get(job_id) for job_id in ids]
            print(json.dumps(jobs[0] if len(jobs) == 1 else jobs, indent=2))
        else:  # cancel
            for job_id in ids:
                job = client.cancel(job_id)
                state = "cancel requested" if job["status"] == "running" else job["status"]
                print(json.dumps(job, indent=2) if args.json else f"{job_id} {state}")
    return 0


def _add_batch(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="run a JSONL file of generate requests on an avgen server as one batch",
        description="One generate request a line (the API's generate fields; reference_image and audio may be "
        "file paths), submitted as one batch. The MP4s go to DIR/NNNN-<id>.mp4 as they finish; at the end "
        "DIR/scores.csv and DIR/summary.json. Run it again to resume: nothing is submitted twice and only "
        "missing MP4s are downloaded.",
    )
    p.add_argument("file", help="JSONL file, one request a line")
    p.add_argument("--out", required=True, help="output folder (created if missing; holds the resume state)")
    _add_server_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


SCORE_COLUMNS = ("sync_confidence", "av_offset_frames", "sync_distance", "temporal_flickering", "warping_error",
                 "audio_flicker")  # fmt: skip
BATCH_STATE = ".avgen-batch.json"


def cmd_batch(args) -> int:
    import csv
    from pathlib import Path

    from avgen.client import (
        ServerError,
        content_key,
        follow_batch,
        load_state,
        name_lines,
        read_batch_file,
        save_state,
        uploaded,
    )
    from avgen.files import atomic_path, file_hash, write_text_atomic
    from avgen.progress import ProgressBar
    from eval.run import summary_table

    lines = read_batch_file(args.file)  # every line checked before anything is uploaded or submitted
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    digest, state_path = file_hash(args.file), out / BATCH_STATE
    state = load_state(state_path)
    if state.get("file") != digest or state.get("server") != args.server:
        state = {"file": digest, "server": args.server, "batch": None, "uploads": {}}
    for stale in out.glob(".[0-9]*-*.mp4.*.tmp"):  # a download killed half-way
        stale.unlink(missing_ok=True)
    with _connect(args) as client:
        batch_id = state["batch"]
        if batch_id is not None:
            try:
                client.get(batch_id)
            except ServerError as e:
                if e.status != 404:
                    raise
                batch_id = None  # not on this server (any more): submit it
        if batch_id is None:
            items = []
            for line in lines:
                item = dict(line.body)
                for field, path in line.files.items():
                    item[field] = uploaded(client, path, state["uploads"], lambda: save_state(state_path, state))
                items.append(item)
            # the key is the content (the file's, and the files it names): a rerun that lost its state still gets
            # the same batch, unless it had to upload those files again (new upload ids: the server refuses it)
            media = sorted({file_hash(path) for line in lines for path in line.files.values()})
            try:
                job = client.submit(
                    {"kind": "batch", "items": items}, idempotency_key=content_key("avgen-batch", [digest, media])
                )
            except ServerError as e:
                if e.status == 422 and "idempotency key" in e.detail:
                    raise ValueError(
                        f"{args.file} was submitted before, with uploads whose ids were in "
                        f"{state_path}, which is gone; nothing was submitted twice (to run it again "
                        "as a new batch, change the file)"
                    ) from None
                raise ServerError(name_lines(e.detail, lines), e.status, e.problem) from None
            batch_id = state["batch"] = job["id"]
            save_state(state_path, state)
            print(f"batch {batch_id}: {len(items)} items {'resumed' if job['replayed'] else 'submitted'}",
                  file=sys.stderr)  # fmt: skip
        else:
            print(f"batch {batch_id}: resumed", file=sys.stderr)

        def finished(index: int, child: dict) -> None:
            path = out / f"{index:04d}-{child['id']}.mp4"
            if child["status"] != "succeeded":
                print(f"line {lines[index].line}: {_job_failure(child)}", file=sys.stderr)
            elif not path.exists():
                try:
                    client.download(child["id"], path)
                except ServerError as e:  # e.g. 410: expired on the server; the others still come
                    print(f"line {lines[index].line}: {path.name}: {e.detail}", file=sys.stderr)

        bar = None if args.quiet else ProgressBar(f"batch {batch_id[:8]}")
        try:
            batch = follow_batch(client, batch_id, finished, bar)
        except KeyboardInterrupt:
            print(f"avgen: run the same command again to resume batch {batch_id}", file=sys.stderr)
            raise
        manifest = client.manifest(batch_id)
    with atomic_path(out / "scores.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("index", "line", "id", "status", "file", "text", *SCORE_COLUMNS, "error"))
        for item, line in zip(manifest["items"], lines):
            scores, mp4 = item.get("scores") or {}, f"{item['index']:04d}-{item['id']}.mp4"
            writer.writerow((item["index"], line.line, item["id"], item["status"],
                             mp4 if (out / mp4).exists() else "", line.body.get("text", ""),
                             *("" if scores.get(c) is None else scores[c] for c in SCORE_COLUMNS),
                             (item.get("error") or {}).get("detail", "")))  # fmt: skip
    write_text_atomic(out / "summary.json", json.dumps(manifest["summary"], indent=1))
    counts = ", ".join(f"{n} {s}" for s, n in manifest["summary"]["counts"].items() if n)
    print(f"batch {batch_id} {batch['status']}: {counts}")
    rows = [item["scores"] for item in manifest["items"] if item.get("scores")]
    if rows:
        print(summary_table(rows))
    print(f"results: {out}/NNNN-<id>.mp4, {out / 'scores.csv'}, {out / 'summary.json'}", file=sys.stderr)
    return 0 if batch["status"] == "succeeded" else EXIT_FAILED


EVAL_STATE = ".avgen-remote-eval.json"


def eval_remote(args) -> list[dict]:
    """`avgen eval --server`: the clips scored as one batch of evaluate jobs on the server's workers, the rows
    written as the local run writes them. Resumes: the state file (DIR/.avgen-remote-eval.json, by the clips'
    content hashes) holds each clip's upload, its scored row and the batch being run."""
    from pathlib import Path

    from avgen.client import ServerError, content_key, follow_batch, load_state, save_state, uploaded
    from avgen.files import file_hash
    from avgen.progress import ProgressBar
    from eval.run import EvalSettings, empty_row, find_clips, write_plots, write_results

    if args.backend == "syncnet":
        raise ValueError("--server scores with --backend landmarks or learned; run syncnet locally")
    if args.learned_weights:
        raise ValueError("--server scores with the server's own learned weights; run --learned-weights locally")
    settings = EvalSettings(backend=args.backend)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = find_clips(args.paths)
    if not clips:
        raise ValueError("no clips found: give video files, folders with videos, or a manifest (.txt) listing them")
    state_path = out / EVAL_STATE
    state = load_state(state_path)
    if state.get("server") != args.server:
        state = {"server": args.server, "uploads": {}, "rows": {}, "batch": None}
    save = lambda: save_state(state_path, state)  # noqa: E731
    hashes = {path: file_hash(path) for path in clips if os.path.isfile(path)}

    def row_key(digest: str) -> str:
        return f"{digest}:{args.backend}"

    def row_of(path: str) -> dict:
        """The server's row as the local run has it (the one place they differ): this clip's path and file."""
        if path not in hashes:
            return empty_row(path, settings, None) | {"error": f"no such file: {path}"}
        scored = state["rows"].get(row_key(hashes[path])) or {"error": "not scored (the batch was canceled?)"}
        server_row = {k: v for k, v in scored.items() if k not in ("path", "file")}
        return empty_row(path, settings, scored.get("weights_hash")) | server_row

    def todo() -> list[str]:
        """The clips (by hash) with no row, or a row with an error: scored (again), as a local rerun does."""
        return sorted({h for h in hashes.values() if (state["rows"].get(row_key(h)) or {"error": "-"})["error"]})

    bar = None if args.quiet else ProgressBar("eval")
    with _connect(args) as client:

        def run(batch: dict) -> None:
            def finished(index: int, child: dict) -> None:
                key = row_key(batch["clips"][index])
                if child["status"] == "succeeded" and child.get("scores"):
                    state["rows"][key] = child["scores"]
                else:
                    state["rows"][key] = {"error": (child.get("error") or {}).get("detail") or child["status"]}
                save()

            follow_batch(client, batch["id"], finished, bar)

        previous = state.get("batch")
        if previous and previous["backend"] == args.backend:  # an interrupted run's batch: see it to its end
            try:
                run(previous)
            except ServerError as e:
                if e.status != 404:
                    raise
        needed = todo()
        if needed:
            path_of = {h: p for p, h in hashes.items()}
            items = [{"kind": "evaluate", "upload": uploaded(client, Path(path_of[h]), state["uploads"], save),
                      "backend": args.backend, "plot": False} for h in needed]  # fmt: skip
            # the same clips after the same previous batch: the same key, so a lost answer gives the same batch
            key = content_key("avgen-eval", [items, (previous or {}).get("id")])
            job = client.submit({"kind": "batch", "items": items}, idempotency_key=key)
            state["batch"] = {"id": job["id"], "clips": needed, "backend": args.backend}
            save()
            run(state["batch"])
        elif bar is not None:
            bar(1.0, f"{len(clips)} clips (scored before)")
    rows = [row_of(path) for path in clips]
    write_results(rows, out)
    write_plots(rows, out)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="avgen", description="Joint audio-video generation: talking heads from text.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _add_generate(sub)
    _add_eval(sub)
    _add_train(sub)
    _add_corpus(sub)
    _add_serve(sub)
    _add_submit(sub)
    _add_jobs(sub)
    _add_batch(sub)
    return parser


COMMANDS = {"generate": cmd_generate, "eval": cmd_eval, "train": cmd_train, "corpus": cmd_corpus, "serve": cmd_serve,
            "submit": cmd_submit, "jobs": cmd_jobs, "batch": cmd_batch}  # fmt: skip


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
    if args.command in REMOTE_COMMANDS and not args.server:
        parser.error(f"avgen {args.command} needs --server URL (or AVGEN_SERVER)")
    if args.command == "jobs" and args.action:
        if args.action[0] not in ("show", "cancel") or len(args.action) < 2:
            parser.error("avgen jobs takes no argument (a list), or show ID / cancel ID...")
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
