"""Webhooks: a job's events POSTed to its `webhook.url`, signed as the Standard Webhooks spec has it.

    {"kind": "generate", "text": "...", "webhook": {"url": "https://example.com/hook", "events": ["completed"]}}

Each delivery is a row of the store's `deliveries` table, written in the same transaction as the job's status
change (api/store.py, webhooks); its body is the job as GET /v1/jobs/{id} showed it then. The `Deliverer` (a
thread started with the app) claims due deliveries and sends them from a small thread pool, off the store's
write lock, so that a slow receiver holds up one thread for at most TIMEOUT_SECONDS (`_Deadline`), never the queue:

    POST url    webhook-id: msg_...            the delivery's id, the same on every attempt (de-duplicate on it)
                webhook-timestamp: 1764500000  unix seconds of this attempt
                webhook-signature: v1,<base64 HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}">

The HMAC key is the base64-decoded part of the owner's secret `whsec_<base64>` (32 random bytes): one secret per
API key, kept in the store; without API keys, one secret in the file <data dir>/webhook-secret (mode 0600).
A 2xx answer delivers; a 410 Gone stops that delivery; anything else (3xx too: redirects are not followed, a
timeout, a refused connection) is retried after backoff_seconds × 2^(attempt-1) (at most MAX_WAIT_SECONDS, and
no sooner than a Retry-After asks), plus up to 25% jitter, until max_attempts, then the delivery is failed.
At least once: a delivery being sent when the server stops is sent again by the next server on the data dir.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import random
import re
import secrets
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from api.deps import ANONYMOUS
from api.store import Delivery, JobStore
from avgen.files import atomic_path

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec: 24 to 64
SECRET_FILE = "webhook-secret"
THREADS = 4  # deliveries sent at once
TIMEOUT_SECONDS = 10.0  # one attempt, connection included
HOLD_SECONDS = 3 * TIMEOUT_SECONDS  # a claimed delivery falls due again after this if its sender died
MAX_WAIT_SECONDS = 3600.0  # the longest wait between two attempts
POLL_SECONDS = 0.5  # how often the deliverer looks for deliveries queued by another process


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The webhook-signature header's value: v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def backoff(attempts: int, base: float, retry_after: float | None = None) -> float:
    """Seconds to wait after `attempts` failed attempts: base × 2^(attempts-1), at least what Retry-After asked,
    at most MAX_WAIT_SECONDS, then up to 25% more (jitter, so that retries of many deliveries spread out)."""
    wait = max(base * 2 ** (attempts - 1), retry_after or 0.0)
    return min(MAX_WAIT_SECONDS, wait) * random.uniform(1.0, 1.25)


# --- which URLs may receive webhooks ---


def url_problem(url: str, host: str, port: int) -> str | None:
    """Why `url` cannot receive webhooks of the server listening on host:port, or None when it can: only http
    and https URLs with a host, and none that reaches the server itself (its address, a loopback or unspecified
    address, or, when it listens on every interface, this machine's names, each at the server's port).
    Names are not resolved: a name that resolves to this machine is not caught here."""
    try:
        parts = urlsplit(url)
        target_port = parts.port  # a ValueError when out of range or not a number
        httpx.URL(url)  # what the deliverer will send to
    except (ValueError, httpx.InvalidURL) as e:
        return f"{url!r} is not a URL ({e})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"only http and https URLs receive webhooks, not {parts.scheme or 'a URL without a scheme'}"
    if not parts.hostname:
        return f"{url!r} has no host"
    if (target_port or (443 if parts.scheme.lower() == "https" else 80)) == port and _is_self(parts.hostname, host):
        return f"{url} points at this server itself; give the address of your receiver"
    return None


def _is_self(target: str, bind_host: str) -> bool:
    target, bind_host = target.lower().rstrip("."), bind_host.lower().rstrip(".")
    address, bound = _address(target), _address(bind_host)
    if target == "localhost" or target.endswith(".localhost") or target == bind_host:
        return True
    if address is not None and (address.is_loopback or address.is_unspecified or address == bound):
        return True
    everywhere = bound is not None and bound.is_unspecified
    return everywhere and (target in _local_names() or (address is not None and address in _local_addresses()))


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `host` is, written in any form the resolver takes (127.1, 2130706433, 0x7f.1, ::1)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[0-9a-fx.]+", host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@cache
def _local_names() -> frozenset[str]:
    return frozenset(n.lower().rstrip(".") for n in (socket.gethostname(), socket.getfqdn()))


@cache
def _local_addresses() -> frozenset:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return frozenset()
    return frozenset(a for a in (_address(info[4][0].split("%")[0]) for info in infos) if a is not None)


# --- secrets ---


class Secrets:
    """Each owner's signing secret: in the store per API key; the anonymous owner's (no API keys) in a file of
    the data dir, mode 0600. Created when first asked for."""

    def __init__(self, store: JobStore, data_dir: str | Path):
        self.store, self.path = store, Path(data_dir) / SECRET_FILE
        self._lock = threading.Lock()

    def get(self, owner: str) -> str:
        if owner != ANONYMOUS:
            return self.store.webhook_secret(owner, new_secret)
        with self._lock:
            if self.path.is_file():
                return self.path.read_text().strip()
            return self._write(new_secret())

    def rotate(self, owner: str) -> str:
        """A new secret replaces the owner's at once: every delivery from now on is signed with it."""
        secret = new_secret()
        if owner != ANONYMOUS:
            self.store.set_webhook_secret(owner, secret)
            return secret
        with self._lock:
            return self._write(secret)

    def _write(self, secret: str) -> str:
        with atomic_path(self.path) as tmp:
            tmp.touch(mode=0o600)  # before the secret is in it (the umask can only take more away)
            tmp.write_text(secret + "\n")
        return secret


# --- the deliverer ---


class Deliverer:
    """Sends the store's due deliveries on a thread, THREADS at once; `start` with the app, `stop` at its end."""

    def __init__(self, store: JobStore, secrets: Secrets, backoff_seconds: float, max_attempts: int):
        self.store, self.secrets = store, secrets
        self.backoff_seconds, self.max_attempts = backoff_seconds, max_attempts
        self._stopping = threading.Event()
        self._wake = store.deliveries_waiting  # set by the store when this process queues one, and by each attempt
        self._free = threading.Semaphore(THREADS)
        self._thread = threading.Thread(target=self._run, name="avgen-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming; attempts under way finish (each within TIMEOUT_SECONDS)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        timeout = httpx.Timeout(TIMEOUT_SECONDS, connect=min(5.0, TIMEOUT_SECONDS))
        headers = {"user-agent": "avgen-webhooks", "content-type": "application/json"}
        # a connection per attempt (none kept alive), so that each attempt's deadline can cut its own (`_Deadline`)
        limits = httpx.Limits(max_keepalive_connections=0)
        with (
            httpx.Client(timeout=timeout, limits=limits, follow_redirects=False, headers=headers) as http,
            ThreadPoolExecutor(THREADS, thread_name_prefix="avgen-webhook") as pool,
        ):
            while not self._stopping.is_set():
                try:
                    self._dispatch(http, pool)
                    due = self.store.next_delivery_at()
                except Exception:
                    log.exception("webhooks: reading the deliveries failed; trying again")
                    due = None
                wait = POLL_SECONDS if due is None else min(POLL_SECONDS, max(0.01, due - self.store.clock()))
                self._wake.wait(wait)  # a finished attempt wakes it: its retry may be due soon
                self._wake.clear()

    def _dispatch(self, http: httpx.Client, pool: ThreadPoolExecutor) -> None:
        free = 0
        while self._free.acquire(blocking=False):
            free += 1
        claimed = []
        try:
            if free:
                claimed = self.store.claim_deliveries(free, HOLD_SECONDS)
        finally:  # the threads that got nothing to send (all of them when the claim failed)
            for _ in range(free - len(claimed)):
                self._free.release()
        for delivery in claimed:
            pool.submit(self._attempt, http, delivery)

    def _attempt(self, http: httpx.Client, delivery: Delivery) -> None:
        try:
            self._send(http, delivery)
        except Exception:  # the store closed under it, a bug: logged, the delivery falls due again
            log.exception("webhooks: delivery %s of job %s", delivery.id, delivery.job_id)
        finally:
            self._free.release()
            self._wake.set()

    def _send(self, http: httpx.Client, delivery: Delivery) -> None:
        timestamp = int(self.store.clock())
        signature = sign(self.secrets.get(delivery.owner), delivery.id, timestamp, delivery.body)
        headers = {"webhook-id": delivery.id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
        retry_after = None
        deadline = _Deadline(TIMEOUT_SECONDS)
        request = {"content": delivery.body.encode(), "headers": headers, "extensions": {"trace": deadline.trace}}
        try:
            with deadline, http.stream("POST", delivery.url, **request) as answer:
                status = answer.status_code  # the answer's body is never read
                retry_after = _seconds(answer.headers.get("retry-after"))
        except Exception as e:  # noqa: BLE001 - whatever stopped this attempt is its error (httpx.InvalidURL is no HTTPError)
            status, error = None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if deadline.passed:
                error = f"Timeout: no whole answer within {TIMEOUT_SECONDS:g} s"
        if status is not None and 200 <= status < 300:
            self.store.record_attempt(delivery.id, delivered=True)
            return
        if status is not None:
            error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        attempts = delivery.attempts + 1
        if status == 410:
            self.store.record_attempt(delivery.id, False, "HTTP 410 Gone: the receiver wants no more of it")
        elif attempts >= self.max_attempts:
            self.store.record_attempt(delivery.id, False, f"gave up after {attempts} attempts; the last: {error}")
            log.warning("webhooks: gave up delivering %s to %s: %s", delivery.id, delivery.url, error)
        else:
            retry_at = self.store.clock() + backoff(attempts, self.backoff_seconds, retry_after)
            self.store.record_attempt(delivery.id, False, error, retry_at)


class _Deadline:
    """One attempt's whole-time limit. httpx's timeouts are per read, so a receiver sending its answer a byte at a
    time would hold the attempt (and a thread) for as long as it liked, past HOLD_SECONDS, when the delivery is
    claimed and sent again meanwhile. `trace` (httpx's trace extension) catches the attempt's connection; once
    `seconds` have passed, it is shut down, which ends a blocked read at once."""

    def __init__(self, seconds: float):
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def trace(self, event: str, info: dict) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):  # TLS: a socket of its own
            with self._lock:
                self._sockets.append(info["return_value"].get_extra_info("socket"))
            if self.passed:  # connected just as the time ran out
                self._cut()

    def _cut(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:  # closed already
                    pass

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (its HTTP-date form is not used by receivers worth the code)."""
    return float(retry_after) if retry_after and retry_after.strip().isdigit() else None
