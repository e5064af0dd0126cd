"""Anchors of the audit log: its head (position and hash) signed by the service's key, kept
somewhere the database's owner cannot reach.

Why: a hash chain in the database proves that no entry was changed, removed or inserted
*before its head*; someone who owns the database can still delete the newest entries and
set the head back (the triggers dropped first), and the shorter chain verifies. An anchor
taken earlier and stored elsewhere (another machine, a write-once store, an external log,
printed) says "the log had entry #N with hash H at time T": ``cargoscan audit verify
--anchor FILE`` then fails if entry #N is gone or hashes differently. ``cargoscan audit
anchor`` writes one; run it on a schedule (docs/service.md) so that what can be cut off
unseen is at most what came after the last anchor.

The signature proves which service made the anchor (a file edited to point at a shortened
log fails), not that it is recent: keep anchors where the database's owner cannot replace
them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from inference.service.db import AuditEntry
from inference.service.signing import (
    Signer,
    canonical,
    load_public_key,
    public_key_sha256,
    signature_ok,
)

FORMAT = "cargoscan-audit-anchor/1"


def make_anchor(signer: Signer, seq: int, entry_hash: str) -> dict[str, Any]:
    """The signed anchor of head ``seq`` / ``entry_hash`` (a JSON object)."""
    statement = {
        "format": FORMAT,
        "seq": seq,
        "entry_hash": entry_hash,
        "at": datetime.now(timezone.utc).isoformat(),
        "key_sha256": signer.key_sha256,
    }
    return {
        "statement": statement,
        "signature": signer.sign(canonical(statement)),
        "public_key_pem": signer.public_pem.decode("ascii"),
    }


@dataclass
class AnchorCheck:
    """What :func:`check_anchor` found: ``problem`` None when the log holds the anchor."""

    seq: int | None
    at: str | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_anchor(engine: Engine, text: str | bytes, expected_key_sha256: str | None) -> AnchorCheck:
    """Whether the log still holds the entry an anchor (its file's text) names, with the
    same hash, and the anchor is signed by ``expected_key_sha256`` (the service's key; None:
    any key, which proves nothing about who made it)."""
    try:
        anchor = json.loads(text)
        statement = anchor["statement"]
        seq, digest = int(statement["seq"]), str(statement["entry_hash"])
        pem = str(anchor["public_key_pem"]).encode("ascii")
        key = load_public_key(pem)
        signature = str(anchor["signature"])
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        return AnchorCheck(None, None, f"not an audit anchor ({type(exc).__name__}: {exc})")
    at = statement.get("at")
    if statement.get("format") != FORMAT:
        return AnchorCheck(seq, at, f"format {statement.get('format')!r}, expected {FORMAT!r}")
    fingerprint = public_key_sha256(pem)
    if not signature_ok(key, signature, canonical(statement)):
        return AnchorCheck(seq, at, "its signature does not verify: the anchor was changed")
    if statement.get("key_sha256") != fingerprint:
        return AnchorCheck(seq, at, "it names another key than the one that signed it")
    if expected_key_sha256 is not None and fingerprint != expected_key_sha256:
        return AnchorCheck(
            seq, at, f"signed by key {fingerprint}, not by this service's {expected_key_sha256}"
        )
    with Session(engine) as s:
        stored = s.scalar(select(AuditEntry.entry_hash).where(AuditEntry.seq == seq))
    if stored is None:
        return AnchorCheck(
            seq,
            at,
            f"the log has no entry #{seq}, which the anchor of {at} saw: entries were removed "
            "(the tail cut off and the head set back)",
        )
    if stored != digest:
        return AnchorCheck(
            seq,
            at,
            f"entry #{seq} hashes to {stored[:16]}..., but the anchor of {at} saw "
            f"{digest[:16]}...: the log up to it was rewritten",
        )
    return AnchorCheck(seq, at)
