"""Files written whole or not at all, and content hashes: the one place for both."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on any error
    (KeyboardInterrupt and SystemExit too) remove it. Readers never see a half-written file.

        with atomic_path(out) as tmp:
            torch.save(state, tmp)
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def file_hash(path: str | Path) -> str:
    """First 16 hex digits of the file's sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
