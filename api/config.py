"""The service's settings: one frozen ServiceConfig, built from command-line values and the environment."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path


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

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, not {self.port}")
        if not self.lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, not {self.lease_seconds}")
        for name in ("max_queued_per_key", "max_queue", "max_upload_bytes", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
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
        AVGEN_LEASE_SECONDS; the rest given."""
        env = os.environ if env is None else env
        if api_keys_file is not None:
            lines = Path(api_keys_file).read_text().splitlines()
            keys = [k.strip() for k in lines if k.strip() and not k.strip().startswith("#")]
            if not keys:
                raise ValueError(f"{api_keys_file} holds no API key (one a line)")
        else:
            keys = [k.strip() for k in env.get("AVGEN_API_KEYS", "").split(",") if k.strip()]
        values = {k: v for k, v in values.items() if v is not None}
        for name in ("max_queued_per_key", "max_queue", "max_upload_bytes", "max_body_bytes"):
            variable = f"AVGEN_{name.upper()}"
            if name not in values and env.get(variable):
                if not env[variable].isdigit():
                    raise ValueError(f"{variable} must be a whole number, not {env[variable]!r}")
                values[name] = int(env[variable])
        if "lease_seconds" not in values and env.get("AVGEN_LEASE_SECONDS"):
            try:
                values["lease_seconds"] = float(env["AVGEN_LEASE_SECONDS"])
            except ValueError:
                raise ValueError(
                    f"AVGEN_LEASE_SECONDS must be a number of seconds, not {env['AVGEN_LEASE_SECONDS']!r}"
                ) from None
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        return cls(api_keys=tuple(keys), **values)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
