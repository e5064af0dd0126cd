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

:func:`take_anchor` is what the CLI and the admin API (``POST /api/v1/admin/audit/anchor``)
both call: the anchor and an ``audit.anchored`` entry saying who took it of which entry,
in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from inference.service import audit
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


def take_anchor(engine: Engine, signer: Signer, actor: str) -> dict[str, Any]:
    """The signed anchor of the log's head now, logged as ``audit.anchored`` (the entry
    follows the anchored one). RuntimeError when the database has no audit head."""
    with Session(engine) as s, s.begin():
        head = audit.lock_head(s)
        if head is None:
            raise RuntimeError("the audit log has no head (not migrated?)")
        seq, digest = int(head.seq), str(head.entry_hash)
        anchor = make_anchor(signer, seq, digest)
        audit.append(
            s,
            "audit.anchored",
            actor,
            None,
            {"seq": seq, "entry_hash": digest, "key_sha256": signer.key_sha256},
        )
    return anchor


@dataclass
class AnchorCheck:
    """What :func:`check_anchor` found: ``problem`` None when the log holds the anchor;
    ``readable`` False when the text is no anchor at all (not JSON, another format)."""

    seq: int | None
    at: str | None
    problem: str | None = None
    readable: bool = True

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
        problem = f"not an audit anchor ({type(exc).__name__}: {exc})"
        return AnchorCheck(None, None, problem, readable=False)
    at = statement.get("at")
    if statement.get("format") != FORMAT:
        problem = f"format {statement.get('format')!r}, expected {FORMAT!r}"
        return AnchorCheck(seq, at, problem, readable=False)
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
