"""Memory and time of building the FlexAttention BlockMask: from key ranges (avgen) vs create_block_mask.

    python benchmarks/flex_mask.py [--out benchmarks/results/flex_mask.json] [--device cpu|cuda]
                                   [--old-max-tokens N] [--cap-mb MB]

`new` is `SlidingWindowMask.block_mask` (tiles from the key ranges, no (L, L) mask); `old` is what it
replaced: `create_block_mask` with the same mask_mod, which evaluates the (L, L) mask.

CPU: each (builder, layout) runs in a fresh subprocess (`--worker`). Just before the build the child
resets its resident-set high-water mark (writes "5" to /proc/self/clear_refs) and reads VmRSS; after
it, VmHWM. peak_mb = VmHWM - VmRSS: the resident memory the build added at its peak, counting only
pages really written (torch returns large blocks to the OS when freed, so they show while alive). A
small layout is built first so that code pages faulted in on first use are not counted. The child
caps its address space at --cap-mb above what it has mapped, so an (L, L) build that would need
more fails fast ("out of memory") instead of taking a shared machine's memory.
CUDA: in process, torch.cuda.max_memory_allocated over the build minus memory_allocated before.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avgen.files import write_text_atomic

# name: (reference tokens, tokens per frame, frames, window frames)
LAYOUTS = {
    "tiny_8k": (16, 17, 466, 12),  # tiny preset's 17 tokens per frame: 7,938 tokens
    "tiny_32k": (16, 17, 1927, 12),  # 32,775 tokens
    "base_chunk": (256, 257, 125, 25),  # base preset: 256 reference tokens + 5 s of 256 + 1 tokens: 32,381
}


def make_mask(n_global: int, per_frame: int, frames: int, window: int, device="cpu"):
    import torch

    from avgen.attention import SlidingWindowMask

    frame_index = torch.cat(
        [torch.zeros(n_global, dtype=torch.long), torch.arange(frames).repeat_interleave(per_frame)]
    ).to(device)
    return SlidingWindowMask(frame_index, torch.arange(len(frame_index), device=device) < n_global, window)


def build(builder: str, mask, device):
    """The BlockMask of `mask` by `builder`: 'new' (avgen) or 'old' (create_block_mask, (L, L))."""
    from torch.nn.attention.flex_attention import create_block_mask

    from avgen.attention import allowed

    if builder == "new":
        return mask.block_mask(device)
    f, g, w, n = mask.frame_index.to(device), mask.is_global.to(device), mask.window_frames, len(mask)
    return create_block_mask(lambda b, h, q, k: allowed(f[q], f[k], g[q], g[k], w), None, None, n, n, device=device)


def proc_status_kb(*keys: str) -> list[int]:
    with open("/proc/self/status") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return [int(fields[k].split()[0]) for k in keys]


def worker(builder: str, layout: tuple, cap_mb: int) -> dict:
    """Peak resident memory added by one CPU build, in this (fresh) process."""
    build(builder, make_mask(4, 3, 100, 2), "cpu")  # warm-up: the same code paths on a small layout
    mask = make_mask(*layout)
    (vm_size_kb,) = proc_status_kb("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, ((vm_size_kb + cap_mb * 1024) * 1024, resource.RLIM_INFINITY))
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current resident set
    except OSError as e:
        return {"status": f"cannot reset the peak resident set: {e}"}
    (rss_kb,) = proc_status_kb("VmRSS")
    t0 = time.perf_counter()
    try:
        block_mask = build(builder, mask, "cpu")
    except (RuntimeError, MemoryError) as e:
        (hwm_kb,) = proc_status_kb("VmHWM")
        return {
            "status": "out of memory",
            "error": f"{type(e).__name__}: {str(e)[:200]}",
            "peak_mb_before_failing": (hwm_kb - rss_kb) / 1024,
            "cap_mb": cap_mb,
        }
    seconds = time.perf_counter() - t0
    (hwm_kb,) = proc_status_kb("VmHWM")
    return {
        "status": "ok",
        "tokens": len(mask),
        "peak_mb": (hwm_kb - rss_kb) / 1024,
        "build_s": seconds,
        "kv_blocks": int(block_mask.kv_num_blocks.sum()),
        "full_kv_blocks": int(block_mask.full_kv_num_blocks.sum()),
    }


def measure_cpu(builder: str, layout: tuple, cap_mb: int, timeout: float = 1800) -> dict:
    cmd = [sys.executable, __file__, "--worker", builder, *map(str, layout), str(cap_mb)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"status": f"failed (rc={proc.returncode})", "error": proc.stderr[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_cuda(builder: str, layout: tuple) -> dict:
    import torch

    mask = make_mask(*layout, device="cuda")
    build(builder, make_mask(4, 3, 100, 2, device="cuda"), "cuda")  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    block_mask = build(builder, mask, "cuda")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() - before
    return {
        "status": "ok",
        "tokens": len(mask),
        "peak_mb": peak / 2**20,
        "build_s": seconds,
        "kv_blocks": int(block_mask.kv_num_blocks.sum()),
        "full_kv_blocks": int(block_mask.full_kv_num_blocks.sum()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/flex_mask.json")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--old-max-tokens",
        type=int,
        default=10_000,
        help="skip the old (L x L) build above this many tokens (CPU; it needs ~17 bytes per pair)",
    )
    ap.add_argument("--cap-mb", type=int, default=4096, help="CPU child's address-space cap above its start")
    args = ap.parse_args()

    import torch

    results = {}
    for name, layout in LAYOUTS.items():
        tokens = layout[0] + layout[1] * layout[2]
        row = {
            "tokens": tokens,
            "window_frames": layout[3],
            "reference_tokens": layout[0],
            "tokens_per_frame": layout[1],
        }
        for builder in ["new", "old"]:
            if args.device == "cuda":
                row[builder] = measure_cuda(builder, layout)
            elif builder == "old" and tokens > args.old_max_tokens:
                row[builder] = {"status": f"skipped: > {args.old_max_tokens} tokens"}
            else:
                row[builder] = measure_cpu(builder, layout, args.cap_mb)
            print(name, tokens, builder, json.dumps(row[builder]), flush=True)
        results[name] = row
    report = {
        "benchmark": "building the FlexAttention BlockMask: key ranges (new) vs create_block_mask (old, L x L)",
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "machine": {"torch": torch.__version__, "python": platform.python_version()},
        "measures": {
            "peak_mb": "CPU: VmHWM after a reset minus VmRSS before the build, in a fresh subprocess;"
            " CUDA: max_memory_allocated over the build minus memory_allocated before",
            "build_s": "wall time of one build after a warm-up build of a small layout",
        },
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        builder, *layout, cap = sys.argv[2:]
        print(json.dumps(worker(builder, tuple(int(x) for x in layout), int(cap))))
    else:
        main()
