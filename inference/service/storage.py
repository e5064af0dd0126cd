"""Original scan bytes (and anomaly maps) in files named by their SHA-256.

Why content addressing: the name proves the bytes (an auditor can re-hash a file), a
retried upload of the same file costs no space, and nothing is ever overwritten with
different content. Why the write dance: the bytes go to a temporary file in the same
folder, are fsync'ed, then renamed over the final name (atomic on POSIX) and the folder
is fsync'ed, so after a crash a file either has all its bytes or does not exist.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Files under ``root/ab/abcdef...`` (the first two hex digits fan the folder out)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        if final.exists() and final.stat().st_size == len(data):
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{digest}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(final.parent)
        return digest

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256`` (FileNotFoundError when missing)."""
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()


def fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the directory entry (not possible on every OS)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
