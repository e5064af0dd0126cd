"""What every repository shares: one short transaction per call, and signing.

The functions are synchronous (SQLAlchemy's ORM is) and are called from worker threads,
never on the event loop. Objects are returned detached (``expire_on_commit=False``) so
callers can read their columns after the session closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from inference.service.db import Signature
from inference.service.signing import Signer, canonical, sha256_hex


class DuplicateName(ValueError):
    """A station (or user) of that name exists already."""


class Repository:
    """Data access over one SQLAlchemy engine; ``signer`` signs results and reviews."""

    def __init__(self, engine: Engine, signer: Signer | None = None) -> None:
        self.engine = engine
        self.signer = signer
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    def sign_statement(
        self, s: Session, subject: str, subject_id: int, statement: dict[str, Any]
    ) -> Signature | None:
        """Sign ``statement`` with the service key and store it (None without a key)."""
        if self.signer is None:
            return None
        text = canonical(statement).decode("utf-8")
        sig = Signature(
            subject=subject,
            subject_id=subject_id,
            key_sha256=self.signer.key_sha256,
            statement=text,
            signature=self.signer.sign(text.encode("utf-8")),
        )
        s.add(sig)
        s.flush()
        return sig


def signature_fields(sig: Signature | None) -> dict[str, Any]:
    """What an audit entry says about a signature: its row, key and statement's SHA-256."""
    if sig is None:
        return {"signature_id": None}
    return {
        "signature_id": sig.id,
        "key_sha256": sig.key_sha256,
        "statement_sha256": sha256_hex(sig.statement.encode("utf-8")),
    }
