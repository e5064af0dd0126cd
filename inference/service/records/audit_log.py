"""The audit log and the signatures: events, a subject's entries, the chain's head, and
signing what the current key has not signed yet."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from inference.service import audit
from inference.service.db import AuditEntry, AuditHead, ResultRecord, Review, ScanRecord, Signature
from inference.service.records.base import Repository, signature_fields
from inference.service.records.reviews import statement_for_review
from inference.service.records.scans import statement_for_result


class AuditRecords(Repository):
    """The audit log and the stored signatures."""

    def sign_unsigned(self, scan_id: str, actor: str) -> int:
        """Sign the scan's results and reviews that the current key has not signed (stored
        before the service signed, or under another key); returns how many."""
        if self.signer is None:
            return 0
        key = self.signer.key_sha256
        made = 0
        with self.session() as s:
            scan = s.get(ScanRecord, scan_id)
            if scan is None:
                return 0
            for subject, model in (("result", ResultRecord), ("review", Review)):
                signed = select(Signature.subject_id).where(
                    Signature.subject == subject, Signature.key_sha256 == key
                )
                rows = s.scalars(
                    select(model)
                    .where(model.scan_id == scan_id, model.id.not_in(signed))
                    .order_by(model.id)
                ).all()
                for row in rows:
                    if subject == "result":
                        statement = statement_for_result(self.signer, scan, row, later=True)
                    else:
                        statement = statement_for_review(self.signer, row, later=True)
                    sig = self.sign_statement(s, subject, row.id, statement)
                    audit.append(
                        s,
                        f"{subject}.signed",
                        actor,
                        scan_id,
                        {f"{subject}_id": row.id, **signature_fields(sig)},
                    )
                    made += 1
        return made

    def signatures(self, subject: str, ids: list[int], key_sha256: str) -> dict[int, Signature]:
        """The newest signature by ``key_sha256`` of each of ``ids``."""
        if not ids:
            return {}
        with self.session() as s:
            rows = s.scalars(
                select(Signature)
                .where(
                    Signature.subject == subject,
                    Signature.subject_id.in_(ids),
                    Signature.key_sha256 == key_sha256,
                )
                .order_by(Signature.id)
            ).all()
        return {r.subject_id: r for r in rows}

    def audit_event(
        self, kind: str, actor: str, subject: str | None = None, data: dict[str, Any] | None = None
    ) -> AuditEntry:
        """Log an event that changes no other table (a failed login, an export)."""
        with self.session() as s:
            return audit.append(s, kind, actor, subject, data)

    def audit_entries(self, subject: str) -> list[AuditEntry]:
        """The audit entries about ``subject`` (a scan id, a user name), oldest first."""
        with self.session() as s:
            q = select(AuditEntry).where(AuditEntry.subject == subject)
            return list(s.scalars(q.order_by(AuditEntry.seq)))

    def audit_head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest audit entry."""
        with self.session() as s:
            row = s.execute(
                select(AuditHead.seq, AuditHead.entry_hash).where(AuditHead.id == audit.HEAD_ID)
            ).one_or_none()
        return None if row is None else (int(row.seq), str(row.entry_hash))
