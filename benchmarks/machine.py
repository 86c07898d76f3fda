"""What every benchmark records about the machine and the moment: load, contention, code version."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_snapshot() -> dict:
    """System-wide busy and steal CPU seconds (/proc/stat) and this process's own CPU seconds."""
    snap = {"own": time.process_time(), "busy": None, "steal": None}
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        snap["busy"] = (user + nice + system + irq + softirq) / tick
        snap["steal"] = steal / tick
    except (OSError, ValueError):
        pass
    return snap


def contention(before: dict, after: dict) -> dict:
    """CPU seconds this process used, other processes used, and the hypervisor stole, in between."""
    own = after["own"] - before["own"]
    out = {"own_cpu_s": round(own, 3)}
    if before["busy"] is not None and after["busy"] is not None:
        out["others_cpu_s"] = round(max(0.0, after["busy"] - before["busy"] - own), 3)
        out["steal_s"] = round(after["steal"] - before["steal"], 3)
    return out


def git_state() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--", "avgen")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "avgen_uncommitted_changes": dirty.splitlines() if dirty else [],
    }


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
