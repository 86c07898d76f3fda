"""The service's settings: one frozen ServiceConfig, built from command-line values and the environment."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DAY = 86400.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": DAY}
_BYTES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./avgen-data")
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # empty: one anonymous owner
    max_queued_per_key: int = 24  # queued + running jobs per owner; more → 429
    max_queue: int = 1000  # queued jobs of all owners; more → 429 (503 semantics: try later)
    max_upload_bytes: int = 200 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024  # JSON bodies
    insecure: bool = False  # allow a non-loopback host without keys
    workers: str = "auto"  # worker pool size: "auto", a number, or "0" for none (API only, jobs stay queued)
    lease_seconds: float = 60.0  # a job whose worker sends no heartbeat for this long goes back to the queue
    threads: int = 2  # torch threads per worker actor (and, with workers auto on CPU, CPUs per actor)
    max_attempts: int = 3  # runs of a job whose worker dies before it fails with worker-lost
    checkpoint: str | None = None  # model weights for the workers; None: the shipped ones
    device: str | None = None  # cpu, cuda or cuda:N; None: cuda when the Ray cluster has GPUs, else cpu
    retention_seconds: float = 7 * DAY  # results and uploads are deleted this long after a job finished / an upload
    max_disk_bytes: int | None = None  # uploads + results above this: the oldest go first; None: no cap
    grace_seconds: float = 30.0  # on SIGTERM, running jobs get this long to finish before going back to the queue
    webhook_backoff_seconds: float = 5.0  # a failed webhook delivery waits this long, doubling after each failure
    webhook_max_attempts: int = 15  # attempts at one webhook delivery before it fails (5 s base: over 5 h)

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, not {self.port}")
        if not self.lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, not {self.lease_seconds}")
        for name in ("max_queued_per_key", "max_queue", "max_upload_bytes", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("threads", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.device is not None and not _DEVICE.match(self.device):
            raise ValueError(f"device must be cpu, cuda or cuda:N, not {self.device!r}")
        if not self.retention_seconds > 0:
            raise ValueError(f"retention must be positive, not {self.retention_seconds} s")
        if self.max_disk_bytes is not None and self.max_disk_bytes < 1:
            raise ValueError(f"max_disk must be positive, not {self.max_disk_bytes} bytes")
        if not self.grace_seconds >= 0:
            raise ValueError(f"grace_seconds must be 0 or more, not {self.grace_seconds}")
        if not self.webhook_backoff_seconds > 0:
            raise ValueError(f"webhook_backoff_seconds must be positive, not {self.webhook_backoff_seconds}")
        if self.webhook_max_attempts < 1:
            raise ValueError(f"webhook_max_attempts must be at least 1, not {self.webhook_max_attempts}")
        if self.workers != "auto" and not self.workers.isdigit():
            raise ValueError(f"workers must be a number (0: no pool) or auto, not {self.workers!r}")
        if any(not k or k.strip() != k or len(k) < 16 for k in self.api_keys):
            raise ValueError("API keys must be at least 16 characters, without surrounding spaces")
        if not self.api_keys and not self.insecure and not _is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without API keys; give --api-keys-file or AVGEN_API_KEYS, "
                "or --insecure to serve anyone who can reach it"
            )

    @classmethod
    def from_env(cls, api_keys_file: str | Path | None = None, env=None, **values) -> ServiceConfig:
        """Keys from api_keys_file (one a line, # comments) or AVGEN_API_KEYS (comma-separated); the caps from
        AVGEN_MAX_QUEUED_PER_KEY, AVGEN_MAX_QUEUE, AVGEN_MAX_UPLOAD_BYTES, AVGEN_MAX_BODY_BYTES; the lease from
        AVGEN_LEASE_SECONDS; retention from AVGEN_RETENTION (parse_duration), the disk cap from AVGEN_MAX_DISK
        (parse_size); webhook retries from AVGEN_WEBHOOK_BACKOFF_SECONDS and AVGEN_WEBHOOK_MAX_ATTEMPTS; the rest
        given."""
        env = os.environ if env is None else env
        if api_keys_file is not None:
            lines = Path(api_keys_file).read_text().splitlines()
            keys = [k.strip() for k in lines if k.strip() and not k.strip().startswith("#")]
            if not keys:
                raise ValueError(f"{api_keys_file} holds no API key (one a line)")
        else:
            keys = [k.strip() for k in env.get("AVGEN_API_KEYS", "").split(",") if k.strip()]
        values = {k: v for k, v in values.items() if v is not None}
        for name in ("max_queued_per_key", "max_queue", "max_upload_bytes", "max_body_bytes", "webhook_max_attempts"):
            variable = f"AVGEN_{name.upper()}"
            if name not in values and env.get(variable):
                if not env[variable].isdigit():
                    raise ValueError(f"{variable} must be a whole number, not {env[variable]!r}")
                values[name] = int(env[variable])
        for name in ("lease_seconds", "webhook_backoff_seconds"):
            variable = f"AVGEN_{name.upper()}"
            if name not in values and env.get(variable):
                try:
                    values[name] = float(env[variable])
                except ValueError:
                    raise ValueError(f"{variable} must be a number of seconds, not {env[variable]!r}") from None
        for name, variable, parse in (
            ("retention_seconds", "AVGEN_RETENTION", parse_duration),
            ("max_disk_bytes", "AVGEN_MAX_DISK", parse_size),
        ):
            if name not in values and env.get(variable):
                try:
                    values[name] = parse(env[variable])
                except ValueError as e:
                    raise ValueError(f"{variable}: {e}") from None
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        return cls(api_keys=tuple(keys), **values)


def parse_duration(text: str) -> float:
    """Seconds from "7d", "12h", "30m", "45s" or a plain number of seconds ("3600"); must be positive."""
    match = _DURATION.match(str(text).strip().lower())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration: give e.g. 7d, 12h, 30m or 3600 (seconds)")
    return float(match[1]) * _SECONDS[match[2]]


def parse_size(text: str) -> int:
    """Bytes from "500M", "10G", "1.5T", "64K" (powers of 1024; a trailing B or iB is allowed) or a plain number of
    bytes; must be positive."""
    match = _SIZE.match(str(text).strip().upper())
    if not match or float(match[1]) * _BYTES[match[2]] < 1:
        raise ValueError(f"{text!r} is not a size: give e.g. 500M, 10G or a number of bytes")
    return int(float(match[1]) * _BYTES[match[2]])


def format_duration(seconds: float) -> str:
    """The largest whole unit: 604800 → "7 days", 5400 → "90 minutes", 1 → "1 second"."""
    for unit, size in (("day", DAY), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
