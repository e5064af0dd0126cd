"""Original scan bytes (and anomaly maps) in files named by their SHA-256.

Why content addressing: the name proves the bytes (an auditor can re-hash a file), a
retried upload of the same file costs no space, and nothing is ever overwritten with
different content. Why the write dance: the bytes go to a temporary file in the same
folder, are fsync'ed, then renamed over the final name (atomic on POSIX) and the folder
is fsync'ed, so after a crash a file either has all its bytes or does not exist.

Why O_DIRECT for large blobs: a scan's channel (4-5 MB) costs ~11 ms of CPU to copy into
freshly allocated page-cache pages on a virtual machine, and that runs beside the model,
on its cores. Written from a reused page-aligned buffer with O_DIRECT it costs ~0.6 ms of
CPU (the rest is I/O wait, which the fsync waited for anyway). Filesystems that refuse
O_DIRECT get the plain buffered write.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import re
import threading
import uuid
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

DIRECT_MIN_BYTES = 1 << 20
"""Blobs this large or larger are written with O_DIRECT (an anomaly map PNG is not)."""
DIRECT_MAX_BYTES = 64 << 20
"""... and no larger: each writer thread keeps a buffer of the largest blob it wrote."""
_DIRECT_BLOCK = 4096
"""O_DIRECT wants the buffer, offset and length aligned to the device's logical block."""
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_buffers = threading.local()


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
            if not write_direct(tmp, data):
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


def write_direct(path: Path, data: bytes) -> bool:
    """Write ``data`` to a new file at ``path`` with O_DIRECT and fsync it; False (nothing
    left at ``path``) when the blob's size or the filesystem does not suit O_DIRECT."""
    size = len(data)
    if not _O_DIRECT or not DIRECT_MIN_BYTES <= size <= DIRECT_MAX_BYTES:
        return False
    padded = -(-size // _DIRECT_BLOCK) * _DIRECT_BLOCK
    buf: mmap.mmap | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < padded:
        if buf is not None:
            buf.close()
        buf = _buffers.buf = mmap.mmap(-1, padded)  # anonymous maps are page aligned
    buf[:size] = data
    buf[size:padded] = bytes(padded - size)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DIRECT, 0o666)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    try:
        view = memoryview(buf)[:padded]
        try:
            written = 0
            while written < padded:
                written += os.write(fd, view[written:])
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            os.close(fd)
            fd = -1
            os.unlink(path)
            return False
        finally:
            view.release()
        os.ftruncate(fd, size)  # the padding of the last block goes
        os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)
    return True


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
