"""The service's Ed25519 signing key, canonical JSON, and signature checks.

Why Ed25519: small keys and signatures (32 and 64 bytes), deterministic signatures (no
random number at signing time to get wrong), fast, and in every crypto library another
administration may use to check our evidence. Why canonical JSON (sorted keys, no spaces,
UTF-8, no NaN): the bytes that are hashed or signed must be the same wherever the same
object is serialised again, in Python or anywhere else.

The private key lives in a PEM file (PKCS#8, unencrypted, mode 0600): by default
``DATA_DIR/signing-key.pem``, made on the first start; ``CARGOSCAN_SIGNING_KEY_PATH``
points at one the operator provides (then it must exist: a missing configured key is an
error, not a reason to make a new identity). The key is never logged; only its public
fingerprint (the SHA-256 of the raw public key) is.

This module imports nothing of the service (no SQLAlchemy, no FastAPI), so that
``cargoscan verify`` runs anywhere with only ``cryptography`` installed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from inference.service.storage import fsync_dir

log = logging.getLogger("cargoscan.service")

DEFAULT_KEY_FILE = "signing-key.pem"


def canonical(obj: Any) -> bytes:
    """The one byte form of a JSON value that is hashed and signed."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class SigningKeyError(Exception):
    """The signing key cannot be read or made (the message says which file and why)."""


class Signer:
    """One Ed25519 private key: signs bytes, and tells its public key and fingerprint."""

    def __init__(self, private_key: Any) -> None:  # Ed25519PrivateKey
        from cryptography.hazmat.primitives import serialization

        self._key = private_key
        public = private_key.public_key()
        self.public_pem: bytes = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_sha256: str = public_key_sha256(self.public_pem)

    def __repr__(self) -> str:  # never the private key, even in a traceback
        return f"Signer(key_sha256={self.key_sha256[:16]}...)"

    def sign(self, data: bytes) -> str:
        """The base64 Ed25519 signature of ``data``."""
        return b64(self._key.sign(data))

    @classmethod
    def generate(cls) -> Signer:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes, where: str = "the key") -> Signer:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"{where}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{where}: not an Ed25519 key ({type(key).__name__})")
        return cls(key)

    def private_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def load_or_create(path: Path, *, create: bool) -> Signer:
    """The key at ``path``; made there (mode 0600, never overwriting) when missing and
    ``create`` is true. Raises SigningKeyError naming the file."""
    path = Path(path)
    if not path.exists():
        if not create:
            raise SigningKeyError(f"signing key {path}: no such file")
        signer = Signer.generate()
        if not _publish_new_key(path, signer.private_pem()):
            return load_or_create(path, create=False)  # another replica made it first
        log.info("made a new signing key %s (public key sha256 %s)", path, signer.key_sha256)
        return signer
    try:
        mode = path.stat().st_mode
        pem = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"signing key {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("signing key %s is readable by others (mode %o): chmod 600 it", path, mode)
    signer = Signer.from_pem(pem, where=f"signing key {path}")
    log.info("signing with key %s (public key sha256 %s)", path, signer.key_sha256)
    return signer


def _publish_new_key(path: Path, pem: bytes) -> bool:
    """Write ``pem`` to a private temporary file, fsync it, then hard-link it to ``path``:
    the key appears whole or not at all, and never over an existing one. Why not create
    ``path`` itself with O_EXCL: replicas starting together on one data directory would
    read the other's file while it is still empty. False when ``path`` exists already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create it in place instead
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def signer_for(settings: Any) -> Signer:
    """The key of ``settings``: ``signing_key_path`` if set (must exist), else made on
    first use in the data directory."""
    configured = getattr(settings, "signing_key_path", None)
    if configured is not None:
        return load_or_create(Path(configured).expanduser(), create=False)
    return load_or_create(Path(settings.data_dir) / DEFAULT_KEY_FILE, create=True)


# --------------------------------------------------------------------------- checking


def public_key_sha256(public_pem: bytes) -> str:
    """The fingerprint of a public key: SHA-256 of its 32 raw bytes (hex)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_hex(raw)


def load_public_key(public_pem: bytes) -> Any:  # Ed25519PublicKey
    """An Ed25519 public key from PEM (ValueError with the reason otherwise)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(public_pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 public key ({type(key).__name__})")
    return key


def signature_ok(public_key: Any, signature_b64: str, data: bytes) -> bool:
    """Whether ``signature_b64`` is ``public_key``'s signature of ``data``."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(unb64(signature_b64), data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
