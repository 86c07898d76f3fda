"""Uploads and results on disk, under one root folder: the only place the service touches files.

    root/uploads/<owner digest>/<upload id>        the uploaded bytes, as received
    root/uploads/<owner digest>/<upload id>.json   {"kind": "image"|"audio"|"video", "bytes": n, "created_at": t}
    root/results/<job id>.<suffix>                 a finished job's result (MP4, or a PNG plot; a batch: its zip)

Ids are generated here (uuid4 hex), never taken from a client, so no path a client sends reaches the
filesystem. Each file is written whole (avgen.files.atomic_path) or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from avgen.files import atomic_path, write_text_atomic

_ID = re.compile(r"^[0-9a-f]{32}$")
RESULT_SUFFIXES = {"video/mp4": ".mp4", "image/png": ".png", "application/zip": ".zip"}  # zip: a batch's archive


class Artifacts:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        (self.root / "results").mkdir(parents=True, exist_ok=True)

    def _owner_dir(self, owner: str) -> Path:
        return self.root / "uploads" / hashlib.sha256(owner.encode()).hexdigest()[:32]

    def save_upload(self, owner: str, data: bytes, kind: str) -> str:
        """Store an upload already checked by the caller; returns its new id."""
        upload_id = uuid.uuid4().hex
        folder = self._owner_dir(owner)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / upload_id) as tmp:
            tmp.write_bytes(data)
        meta = {"kind": kind, "bytes": len(data), "created_at": time.time()}
        write_text_atomic(folder / f"{upload_id}.json", json.dumps(meta))
        return upload_id

    def upload_info(self, owner: str, upload_id: str) -> dict | None:
        """The upload's metadata, or None if `owner` has no such upload (another owner's is None too)."""
        if not isinstance(upload_id, str) or not _ID.match(upload_id):
            return None
        meta = self._owner_dir(owner) / f"{upload_id}.json"
        return json.loads(meta.read_text()) if meta.is_file() else None

    def upload_bytes(self, owner: str, upload_id: str) -> bytes | None:
        if self.upload_info(owner, upload_id) is None:
            return None
        return (self._owner_dir(owner) / upload_id).read_bytes()

    def save_result(self, job_id: str, data: bytes, media_type: str) -> Path:
        path = self.result_path(job_id, media_type)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return path

    def result_path(self, job_id: str, media_type: str = "video/mp4") -> Path:
        if not _ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / "results" / f"{job_id}{RESULT_SUFFIXES[media_type]}"

    # -- retention (api/retention.py): what is stored, how much, and deleting it ----------------------------------

    def uploads(self) -> list[StoredUpload]:
        """Every stored upload of every owner (files being written, whose names start with a dot, are not)."""
        found = []
        for meta in (self.root / "uploads").glob("*/*.json"):
            if meta.name.startswith(".") or not _ID.match(meta.stem):
                continue
            try:
                created_at = float(json.loads(meta.read_text())["created_at"])
                size = meta.stat().st_size + (meta.parent / meta.stem).stat().st_size
            except (OSError, ValueError, KeyError, TypeError):  # half deleted, or not ours: left alone
                continue
            found.append(StoredUpload(meta.parent / meta.stem, created_at, size))
        return found

    def delete_upload(self, upload: StoredUpload) -> None:
        """The metadata goes first: from then on the upload is unknown (upload_info says None), then its bytes."""
        upload.path.with_name(f"{upload.path.name}.json").unlink(missing_ok=True)
        upload.path.unlink(missing_ok=True)

    def results(self) -> dict[str, int]:
        """Job id → bytes of its stored result files (files being written are not listed)."""
        sizes: dict[str, int] = {}
        for path in (self.root / "results").iterdir():
            job_id = path.name.split(".")[0]
            if _ID.match(job_id) and path.suffix in RESULT_SUFFIXES.values():
                try:
                    sizes[job_id] = sizes.get(job_id, 0) + path.stat().st_size
                except OSError:  # deleted meanwhile
                    continue
        return sizes

    def delete_result(self, job_id: str) -> None:
        for media_type in RESULT_SUFFIXES:
            self.result_path(job_id, media_type).unlink(missing_ok=True)

    def leftovers(self, before: float) -> list[Path]:
        """Files last written before `before` (epoch seconds) that no finished write made: temporary files of
        atomic_path (a dot, .tmp) and upload bytes without their metadata, left by a server killed mid-write."""
        found = []
        for area, pattern in (("results", "*"), ("uploads", "*/*")):
            for path in (self.root / area).glob(pattern):
                temporary = path.name.startswith(".") and path.name.endswith(".tmp")
                bare = area == "uploads" and _ID.match(path.name) and not path.with_name(f"{path.name}.json").exists()
                try:
                    if (temporary or bare) and path.stat().st_mtime < before:
                        found.append(path)
                except OSError:  # deleted meanwhile
                    continue
        return found

    def disk_bytes(self) -> dict[str, int]:
        """Bytes of every file under uploads/ and results/ (files being written too: they take disk)."""
        return {area: _tree_bytes(self.root / area) for area in ("uploads", "results")}


@dataclass(frozen=True)
class StoredUpload:
    path: Path  # the bytes; its metadata beside it, with .json added
    created_at: float
    bytes: int  # of both files


def _tree_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:  # deleted meanwhile
                continue
    return total
