"""A client of the avgen HTTP API (`avgen serve`): the calls `avgen submit`, `avgen jobs`, `avgen batch` and
`avgen eval --server` make, over httpx.

Every error the server answers (application/problem+json) is raised as `ServerError` carrying the problem's
`detail`; a server that cannot be reached is a `ServerError` too (status None). Both are ValueErrors, so the
command line shows them as one line and exits 1. Calls that are safe to repeat (GETs, a submission with an
Idempotency-Key, an upload) are retried a few times after a network error; the event stream reconnects with
Last-Event-ID and so sees each event once.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from avgen.files import atomic_path, file_hash, write_text_atomic
from workers.jobs import TERMINAL

RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before each retry after a network error
STREAM_READ_TIMEOUT = 60.0  # the server sends a keep-alive every 15 s on a quiet event stream
MAX_PAGE = 100  # the most jobs GET /v1/jobs answers at once
SYNC_SECONDS = 1.0  # a followed batch's finished items are listed at most this often (and once at its end)


class ServerError(ValueError):
    """The server refused a request (`status`, and `detail` in its words), or could not be reached (status None)."""

    def __init__(self, detail: str, status: int | None = None, problem: dict | None = None):
        super().__init__(detail)
        self.detail, self.status, self.problem = detail, status, problem or {}


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    data: dict


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def _problem(r: httpx.Response) -> ServerError:
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return ServerError(body["detail"], r.status_code, body)
    text = " ".join(r.text.split())[:200]
    return ServerError(f"{r.status_code} {r.reason_phrase}" + (f": {text}" if text else ""), r.status_code)


class Client:
    """One server, one API key (None: the server runs without keys)."""

    def __init__(self, server: str, api_key: str | None = None, timeout: float = 30.0, retry_delays=RETRY_DELAYS):
        if not re.match(r"^https?://[^/]+", server or ""):
            raise ValueError(f"the server must be an http:// or https:// URL, not {server!r}")
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)
        self.retry_delays = tuple(retry_delays)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- requests ---

    def _request(self, method: str, path: str, retry: bool = True, **kw) -> httpx.Response:
        """The answer (2xx), or ServerError: the problem's detail, or that the server cannot be reached."""
        delays = self.retry_delays if retry else ()
        for attempt in range(len(delays) + 1):
            try:
                r = self.http.request(method, path, **kw)
            except httpx.TransportError as e:
                if attempt == len(delays):
                    raise self._unreachable(e) from None
                time.sleep(delays[attempt])
                continue
            if r.is_success:
                return r
            raise _problem(r)
        raise AssertionError("unreachable")

    def _unreachable(self, e: Exception) -> ServerError:
        return ServerError(f"cannot reach {self.server} ({type(e).__name__}: {' '.join(str(e).split()) or '-'})")

    def upload(self, path: str | Path) -> dict:
        """POST the file to /v1/uploads: {"id", "kind", "bytes", "url"}."""
        path = Path(path)
        data = path.read_bytes()  # read once: a retry sends the same bytes
        return self._request("POST", "/v1/uploads", files={"file": (path.name, data)}).json()

    def upload_exists(self, upload_id: str) -> bool:
        try:
            self._request("GET", f"/v1/uploads/{upload_id}")
            return True
        except ServerError as e:
            if e.status == 404:
                return False
            raise

    def submit(self, body: dict, idempotency_key: str | None = None) -> dict:
        """POST /v1/jobs: {"id", "status", "urls"}, and "replayed" (True when the key had already made it).
        Without a key the submission is not retried after a network error (it could make a second job)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        r = self._request("POST", "/v1/jobs", retry=idempotency_key is not None, json=body, headers=headers)
        return {**r.json(), "replayed": r.headers.get("idempotent-replayed") == "true"}

    def get(self, job_id: str) -> dict:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def list(self, status: str | None = None, kind: str | None = None, parent: str | None = None,
             limit: int | None = 20) -> list[dict]:  # fmt: skip
        """The jobs, newest first (limit None: all of them, page by page); with parent: that batch's children."""
        params = {k: v for k, v in {"status": status, "kind": kind, "parent": parent}.items() if v is not None}
        jobs: list[dict] = []
        cursor = None
        while limit is None or len(jobs) < limit:
            page = MAX_PAGE if limit is None else min(MAX_PAGE, limit - len(jobs))
            answer = self._request(
                "GET", "/v1/jobs", params={**params, "limit": page, **({"cursor": cursor} if cursor else {})}
            ).json()
            jobs += answer["jobs"]
            cursor = answer.get("next_cursor")
            if not cursor:
                break
        return jobs

    def children(self, batch_id: str) -> list[dict]:
        """A batch's children in item order (index 0 first)."""
        return self.list(parent=batch_id, limit=None)[::-1]  # listed newest first; created in item order

    def cancel(self, job_id: str) -> dict:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def manifest(self, batch_id: str) -> dict:
        """A finished batch's result: each item's status, scores, error, and the summary."""
        return self._request("GET", f"/v1/jobs/{batch_id}/result").json()

    def download(self, job_id: str, out: str | Path, what: str = "result") -> Path:
        """The job's result (what="archive": a batch's zip) into `out`, whole or not at all."""
        delays = self.retry_delays
        for attempt in range(len(delays) + 1):
            try:
                with atomic_path(out) as tmp, self.http.stream("GET", f"/v1/jobs/{job_id}/{what}") as r:
                    if not r.is_success:
                        r.read()
                        raise _problem(r)
                    with open(tmp, "wb") as f:
                        for chunk in r.iter_bytes(1 << 16):
                            f.write(chunk)
                return Path(out)
            except httpx.TransportError as e:
                if attempt == len(delays):
                    raise self._unreachable(e) from None
                time.sleep(delays[attempt])
        raise AssertionError("unreachable")

    # --- events ---

    def events(self, job_id: str, after: int = 0) -> Iterator[Event]:
        """The job's events from after `after` until its final one. A dropped connection is reopened with
        Last-Event-ID (each event is seen once); ServerError once the server stays unreachable."""
        last, failures, final = after, 0, False
        timeout = httpx.Timeout(self.http.timeout.connect, read=STREAM_READ_TIMEOUT)
        while True:
            headers = {"Last-Event-ID": str(last)} if last else {}
            got = 0
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as r:
                    if not r.is_success:
                        r.read()
                        raise _problem(r)
                    for event in _parse_sse(r.iter_lines()):
                        last, failures, got, final = event.id, 0, got + 1, is_terminal(event.type)
                        yield event
            except httpx.TransportError as e:
                if failures >= len(self.retry_delays):
                    raise self._unreachable(e) from None
                time.sleep(self.retry_delays[failures])
                failures += 1
                continue
            # the server closes the stream after the final event; a close before it (a restart): reconnect
            if final or (not got and is_terminal(self.get(job_id)["status"])):
                return
            time.sleep(self.retry_delays[0])

    def wait(self, job_id: str, progress: Callable[[float, str], None] | None = None) -> dict:
        """Follow the job's events until it finishes, reporting (fraction, message); the finished job."""
        for event in self.events(job_id):
            if progress is None:
                continue
            if event.type == "progress":
                progress(float(event.data.get("fraction") or 0.0), event.data.get("message") or "")
            elif event.type in ("queued", "started"):
                progress(0.0, "running" if event.type == "started" else "queued")
        return self.get(job_id)


def _parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-Sent Events (id, event, data; comments and retry ignored) as Events, each once it is complete."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields and "id" in fields:
                yield Event(int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


def follow_batch(
    client: Client,
    batch_id: str,
    on_finished: Callable[[int, dict], None],
    progress: Callable[[float, str], None] | None = None,
) -> dict:
    """Follow a batch until every item has finished: `on_finished(index, child)` once per finished child, soon
    after it finishes (children are listed by status, so unfinished ones are not read again and again), and
    `progress(fraction, message)` from the batch's own events (its items finished / all). The finished batch."""
    index = {child["id"]: i for i, child in enumerate(client.children(batch_id))}  # item order, listed once
    seen: set[str] = set()

    def sync() -> None:
        for status in sorted(TERMINAL):
            for child in client.list(parent=batch_id, status=status, limit=None):
                if child["id"] not in seen:
                    on_finished(index[child["id"]], child)
                    seen.add(child["id"])

    synced = 0.0
    for event in client.events(batch_id):
        if progress is not None and event.type in ("queued", "started", "progress"):
            progress(float(event.data.get("fraction") or 0.0), event.data.get("message") or event.type)
        finished = event.type == "progress" or is_terminal(event.type)
        if finished and time.monotonic() - synced >= SYNC_SECONDS:  # many items finishing at once: one listing
            sync()
            synced = time.monotonic()
    sync()
    return client.get(batch_id)


# --- batch files (avgen batch) ---

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
FILE_FIELDS = ("reference_image", "audio")  # generate fields that name an upload: a file path in a batch file
MAX_REPORTED = 3  # malformed lines named in one error message


@dataclass
class BatchLine:
    line: int  # 1-based line number in the file
    body: dict  # a generate body; FILE_FIELDS hold file paths until they are uploaded
    files: dict[str, Path]  # field -> the local file to upload for it


def read_batch_file(path: str | Path) -> list[BatchLine]:
    """Every request of a JSONL batch file (one generate body a line, `kind` optional, blank lines skipped;
    `reference_image` / `audio` may be file paths, relative to the file), checked against the API's own
    schema, so that a malformed line is found before anything is uploaded or submitted: ValueError naming
    the line numbers."""
    from pydantic import ValidationError

    from api.schemas import MAX_BATCH_ITEMS, GenerateBody

    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (one JSON object a line)") from None
    lines, problems = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(f"line {number}: not JSON ({e.msg}, column {e.colno})")
            continue
        if not isinstance(body, dict):
            problems.append(f"line {number}: a JSON object is needed, not {type(body).__name__}")
            continue
        body = {"kind": "generate", **body}
        if body["kind"] != "generate":
            problems.append(f"line {number}: kind: {body['kind']!r}: a batch file holds generate requests "
                            "(score clips with avgen eval --server)")  # fmt: skip
            continue
        files, check = {}, dict(body)
        for field in FILE_FIELDS:
            value = body.get(field)
            if isinstance(value, str) and not UPLOAD_ID.match(value):
                local = path.parent / value
                if not local.is_file():
                    problems.append(f"line {number}: {field}: no such file {value!r} (paths are relative to {path})")
                files[field], check[field] = local, "0" * 32  # the schema checks the rest
        try:
            GenerateBody.model_validate(check)
        except ValidationError as e:
            problems += [
                f"line {number}: {'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()
            ]
            continue
        lines.append(BatchLine(number, body, files))
    if problems:
        more = f"; and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise ValueError(f"{path}: " + "; ".join(problems[:MAX_REPORTED]) + more + "; nothing was submitted")
    if not lines:
        raise ValueError(f"{path}: no requests (one JSON object a line)")
    if len(lines) > MAX_BATCH_ITEMS:
        raise ValueError(f"{path}: {len(lines)} requests; a batch holds at most {MAX_BATCH_ITEMS}: split the file")
    return lines


def name_lines(detail: str, lines: list[BatchLine]) -> str:
    """The server's `items[3].seconds: ...` as `line 7: seconds: ...` (the line of the file item 3 came from)."""

    def line(m: re.Match) -> str:
        index = int(m.group(1))
        return f"line {lines[index].line}: " if index < len(lines) else m.group(0)

    return re.sub(r"items\[(\d+)\]\.?", line, detail)


# --- resumable runs: a small JSON state file in the output folder ---


def load_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def save_state(path: Path, state: dict) -> None:
    write_text_atomic(path, json.dumps(state, indent=1))


def uploaded(client: Client, path: Path, cache: dict[str, str], saved: Callable[[], None]) -> str:
    """The upload id of the file: the one `cache` holds for its content hash if the server still has it,
    else a new upload (recorded in `cache`, then `saved()` so a rerun does not upload it again)."""
    digest = file_hash(path)
    known = cache.get(digest)
    if known and client.upload_exists(known):
        return known
    cache[digest] = client.upload(path)["id"]
    saved()
    return cache[digest]


def content_key(prefix: str, value) -> str:
    """An Idempotency-Key from the content of what is submitted: the same content, the same key."""
    return f"{prefix}-" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]
