"""The stored records against the audit log: what ``cargoscan audit verify`` checks after
the chain itself.

Why: the chain only proves that its entries were not changed. Someone who owns the
database and drops the triggers can still edit the rows the entries speak of (a result's
verdict set to clear, a scan's vehicle id): the chain stays intact and the edit goes
unseen, unless every row a decision rests on is checked against what its entry recorded.
So each scan, result and review is re-hashed (``facts.py``) and compared with its entry:

- a scan with its ``scan.received`` entry (the whole record since revision 0004; the
  channels' hashes, sizes and the station scan id before);
- a result with its ``result`` entry (the whole row since 0004; verdict, risk, model and
  the JSON's hash before);
- a review with its ``review`` entry (the review as signed);
- a re-opening (which sends a reviewed scan back to the queue) with its
  ``review.reopened`` entry (scan and reason); re-openings from before the log began
  (revision 0002's, stored before ``audit.start``) have no entry: migration 0006 sealed
  each one's hash;
- a signature row with the entry that stored it (``result``, ``review``, ``*.signed``:
  subject, key and the statement's SHA-256), and its signature bytes with the service's
  public key when it is given (signatures by an earlier key: against their entry only);
- the rows stored before their entries carried a whole-record hash, together, with the
  ``audit.sealed`` entry of migration 0004 (count and digest per table);
- stations, users, live sessions and model activations: ``coverage_access.py``.

A row with no entry (inserted behind the service's back) or an entry whose row is gone
(deleted) is named too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from inference.service.coverage_access import access_seal, verify_access
from inference.service.db import (
    AuditEntry,
    Reopening,
    ResultRecord,
    Review,
    ScanRecord,
    Signature,
    Station,
)
from inference.service.facts import (
    SCAN_ENTRY_FIELDS,
    fact_sha256,
    reopening_fact_of,
    result_fact_of,
    scan_fact_of,
    seal_digest,
)
from inference.service.signing import (
    canonical,
    load_public_key,
    public_key_sha256,
    sha256_hex,
    signature_ok,
)

MAX_NAMED = 50
"""Problems listed one by one before the rest are only counted."""


@dataclass
class CoverageReport:
    """What :func:`verify_records` found: ``problems`` (empty when every row matches its
    entry) and how many rows of each kind were checked."""

    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    more: int = 0
    notes: list[str] = field(default_factory=list)
    """What was not checked, and why (e.g. signatures by a key not given)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < MAX_NAMED:
            self.problems.append(problem)
        else:
            self.more += 1


@dataclass
class _Entry:
    seq: int
    subject: str | None
    data: dict[str, Any]


def _entries(s: Session, kind: str, key: str | None) -> dict[Any, _Entry]:
    """Entries of ``kind`` by ``data[key]`` (by subject when ``key`` is None); the first
    one wins (the service writes one per row)."""
    found: dict[Any, _Entry] = {}
    q = select(AuditEntry.seq, AuditEntry.subject, AuditEntry.data).where(AuditEntry.kind == kind)
    for seq, subject, data in s.execute(q.order_by(AuditEntry.seq)):
        data = data if isinstance(data, dict) else {}
        ident = subject if key is None else data.get(key)
        found.setdefault(ident, _Entry(int(seq), subject, data))
    return found


def _rows(s: Session, q: Any) -> Iterator[Any]:
    yield from s.execute(q.execution_options(yield_per=1000))


def verify_records(engine: Engine, public_key_pem: bytes | None = None) -> CoverageReport:
    """Check every stored row a decision or access rests on against the audit log (see the
    module); ``public_key_pem``: the service's key, to check the signatures' bytes too."""
    report = CoverageReport()
    with Session(engine) as s, s.begin():
        seals = _entries(s, "audit.sealed", None)
        seal = seals.get(None)
        sealed: dict[str, list[tuple[Any, str]]] = {"scans": [], "results": [], "reviews": []}
        _scans(s, report, seal, sealed["scans"])
        _results(s, report, seal, sealed["results"])
        _reviews(s, report, sealed["reviews"])
        _reopenings(s, report)
        _check_seal(report, seal, sealed)
        verify_access(s, report.add, report.checked)
        _signatures(s, report, public_key_pem)
    return report


def _before_seal(entry: _Entry | None, seal: _Entry | None) -> bool:
    """A row the seal covers: stored before it (its entry older), or with no entry."""
    return entry is None or (seal is not None and entry.seq < seal.seq)


def _scans(
    s: Session, report: CoverageReport, seal: _Entry | None, sealed: list[tuple[Any, str]]
) -> None:
    logged = _entries(s, "scan.received", None)
    q = select(ScanRecord, Station.name).join(Station, Station.id == ScanRecord.station_id)
    n = 0
    for scan, station in _rows(s, q.order_by(ScanRecord.id)):
        n += 1
        entry = logged.pop(scan.id, None)
        digest = fact_sha256(scan_fact_of(scan, station))
        if entry is not None:
            differ = [
                k
                for k in SCAN_ENTRY_FIELDS
                if k in entry.data and entry.data[k] != getattr(scan, k)
            ]
            recorded = entry.data.get("scan_sha256")
            if differ or (recorded is not None and recorded != digest):
                what = ", ".join(differ) if differ else "its station, times or metadata"
                report.add(
                    f"scan {scan.id} was changed after it was stored: {what} differ from what "
                    f"audit entry #{entry.seq} recorded"
                )
                continue
            if recorded is not None:
                continue
        if _before_seal(entry, seal):
            sealed.append((scan.id, digest))
        else:
            report.add(f"scan {scan.id}: its audit entry #{entry.seq} holds no record hash")
    for scan_id, entry in logged.items():
        report.add(
            f"scan {scan_id} (received in audit entry #{entry.seq}) is missing from the "
            "database: it was deleted"
        )
    report.checked["scans"] = n


def _results(
    s: Session, report: CoverageReport, seal: _Entry | None, sealed: list[tuple[Any, str]]
) -> None:
    logged = _entries(s, "result", "result_id")
    n = 0
    for (result,) in _rows(s, select(ResultRecord).order_by(ResultRecord.id)):
        n += 1
        entry = logged.pop(result.id, None)
        digest = fact_sha256(result_fact_of(result))
        if entry is not None:
            d = entry.data
            model = d.get("model") if isinstance(d.get("model"), dict) else {}
            said = {
                "scan": entry.subject,
                "verdict": d.get("verdict"),
                "risk": d.get("risk"),
                "model version": model.get("version"),
                "model sha256": model.get("sha256"),
                "result JSON": d.get("result_sha256"),
            }
            has = {
                "scan": result.scan_id,
                "verdict": result.verdict,
                "risk": result.risk,
                "model version": result.model_version,
                "model sha256": result.model_sha256,
                "result JSON": sha256_hex(canonical(result.body)),
            }
            differ = [k for k in said if said[k] != has[k]]
            if result.body.get("verdict") != result.verdict:
                differ.append("verdict (column against the result JSON)")
            recorded = d.get("row_sha256")
            if differ or (recorded is not None and recorded != digest):
                what = ", ".join(differ) if differ else "a column"
                report.add(
                    f"result {result.id} of scan {result.scan_id} was changed after it was "
                    f"stored: {what} differ from what audit entry #{entry.seq} recorded"
                )
                continue
            if recorded is not None:
                continue
        if _before_seal(entry, seal):
            sealed.append((result.id, digest))
        else:
            report.add(f"result {result.id}: its audit entry #{entry.seq} holds no row hash")
    for result_id, entry in logged.items():
        report.add(
            f"result {result_id} of scan {entry.subject} (audit entry #{entry.seq}) is missing "
            "from the database: it was deleted"
        )
    report.checked["results"] = n


def _reviews(s: Session, report: CoverageReport, sealed: list[tuple[Any, str]]) -> None:
    from inference.service.evidence import review_dict

    logged = _entries(s, "review", "review_id")
    n = 0
    for (review,) in _rows(s, select(Review).order_by(Review.id)):
        n += 1
        entry = logged.pop(review.id, None)
        digest = fact_sha256(review_dict(review))
        if entry is None:
            sealed.append((review.id, digest))
        elif entry.data.get("review_sha256") != digest or entry.subject != review.scan_id:
            report.add(
                f"review {review.id} of scan {review.scan_id} was changed after it was stored: "
                f"it differs from what audit entry #{entry.seq} recorded"
            )
    for review_id, entry in logged.items():
        report.add(
            f"review {review_id} of scan {entry.subject} (audit entry #{entry.seq}) is missing "
            "from the database: it was deleted"
        )
    report.checked["reviews"] = n


def _reopenings(s: Session, report: CoverageReport) -> None:
    logged = _entries(s, "review.reopened", "reopening_id")
    seal = access_seal(s)
    sealed = seal[1].get("reopenings") if seal is not None else None
    sealed = sealed if isinstance(sealed, dict) else {}
    n = 0
    for (row,) in _rows(s, select(Reopening).order_by(Reopening.id)):
        n += 1
        entry = logged.pop(row.id, None)
        if entry is None:
            said = sealed.get(str(row.id))
            if said is None:
                report.add(
                    f"re-opening {row.id} of scan {row.scan_id} has no audit entry: it was "
                    "added behind the log"
                )
            elif said != fact_sha256(reopening_fact_of(row)):
                assert seal is not None
                report.add(
                    f"re-opening {row.id} of scan {row.scan_id} was changed after it was "
                    f"stored: it differs from what the seal of revision 0006 (#{seal[0]}) "
                    "recorded"
                )
        elif entry.subject != row.scan_id or entry.data.get("reason") != row.reason:
            report.add(
                f"re-opening {row.id} of scan {row.scan_id} was changed after it was stored: "
                f"it differs from what audit entry #{entry.seq} recorded"
            )
    for reopening_id, entry in logged.items():
        report.add(
            f"re-opening {reopening_id} of scan {entry.subject} (audit entry #{entry.seq}) is "
            "missing from the database: it was deleted"
        )
    report.checked["reopenings"] = n


def _check_seal(
    report: CoverageReport, seal: _Entry | None, sealed: dict[str, list[tuple[Any, str]]]
) -> None:
    for table, pairs in sealed.items():
        if seal is None:
            for ident, _ in pairs[:MAX_NAMED]:
                report.add(f"{table[:-1]} {ident} has no audit entry: it was added behind the log")
            report.more += max(0, len(pairs) - MAX_NAMED)
            continue
        said = seal.data.get(table) if isinstance(seal.data.get(table), dict) else {}
        count, digest = said.get("count", 0), said.get("sha256")
        if not pairs and not count:
            continue
        if len(pairs) != count or seal_digest(pairs) != digest:
            report.add(
                f"the {count} {table} stored before their entries held a record hash (sealed "
                f"in audit entry #{seal.seq}) do not match the seal: {len(pairs)} such rows "
                "now, and one or more was changed, added or removed"
            )


SIGNED_KINDS = ("result", "review", "result.signed", "review.signed")
"""The entries that store a signature (``records.base.signature_fields``)."""


def _signatures(s: Session, report: CoverageReport, public_key_pem: bytes | None) -> None:
    """Each signature row against the entry that stored it, and its bytes against the key."""
    key = load_public_key(public_key_pem) if public_key_pem is not None else None
    fingerprint = public_key_sha256(public_key_pem) if public_key_pem is not None else None
    logged: dict[Any, tuple[int, str, dict[str, Any]]] = {}
    q = select(AuditEntry.seq, AuditEntry.kind, AuditEntry.data).where(
        AuditEntry.kind.in_(SIGNED_KINDS)
    )
    for seq, kind, data in s.execute(q.order_by(AuditEntry.seq)):
        data = data if isinstance(data, dict) else {}
        if data.get("signature_id") is not None:
            logged.setdefault(data["signature_id"], (int(seq), kind.split(".")[0], data))
    n = other = 0
    for (sig,) in _rows(s, select(Signature).order_by(Signature.id)):
        n += 1
        found = logged.pop(sig.id, None)
        if found is None:
            report.add(
                f"signature {sig.id} (of {sig.subject} {sig.subject_id}) has no audit entry: "
                "it was added behind the log"
            )
            continue
        seq, subject, d = found
        differ = [
            what
            for what, said, has in (
                ("subject", subject, sig.subject),
                (f"{subject} id", d.get(f"{subject}_id"), sig.subject_id),
                ("key", d.get("key_sha256"), sig.key_sha256),
                ("statement", d.get("statement_sha256"), sha256_hex(sig.statement.encode())),
            )
            if said != has
        ]
        if differ:
            report.add(
                f"signature {sig.id} of {subject} {d.get(f'{subject}_id')} was changed after it "
                f"was stored: {', '.join(differ)} differ from what audit entry #{seq} recorded"
            )
        if key is None or sig.key_sha256 != fingerprint:
            other += 1
        elif not signature_ok(key, sig.signature, sig.statement.encode("utf-8")):
            report.add(
                f"signature {sig.id} of {sig.subject} {sig.subject_id} does not verify with the "
                "service's key over its statement: its bytes were changed"
            )
    for ident, (seq, subject, d) in logged.items():
        report.add(
            f"signature {ident} of {subject} {d.get(f'{subject}_id')} (audit entry #{seq}) is "
            "missing from the database: it was deleted"
        )
    report.checked["signatures"] = n
    if other:
        why = "no service key given" if key is None else "made by another key than the service's"
        report.notes.append(
            f"{other} signature(s) checked against their entries only ({why}): their bytes "
            "were not verified"
        )
