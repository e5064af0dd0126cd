"""Signed statements about results and reviews, and evidence packages that prove them offline.

A **statement** is what the service's key signs (canonical JSON, ``signing.canonical``):

- for a result: the SHA-256 of the scan's original bytes (each channel), the findings,
  verdict and risk, the model's name, version and SHA-256, the pre-processing version and
  the SHA-256 of the whole result JSON;
- for a review: the review as the API shows it (officer, role, time, verdict, comment, the
  decision on every finding, the boxes drawn).

An **evidence package** (``GET /api/v1/scans/{id}/evidence``) is a ZIP that another
administration can check with nothing but the package (``cargoscan verify PACKAGE``, or
any Ed25519 and SHA-256 tool, see its README.txt):

=========================== =============================================================
``manifest.json``           scan id, export time, the key's fingerprint, the audit head at
                            export, and the SHA-256 and size of every other member
``manifest.sig``            the key's signature of ``manifest.json`` (base64)
``public_key.pem``          the service's Ed25519 public key
``scan/high.*``, ``low.*``  the original bytes the station sent
``scan.json``               what was received (station, times, metadata, SHA-256s)
``result.json``             the scan's current result (docs/design.md)
``result.statement.json``   its signed statement
``reviews.json``            every review of the scan, oldest first
``reviews/ID.statement.json`` each review's signed statement
``signatures.json``         the signature of each statement file
``audit.json``              the audit-log entries about the scan (each re-hashable)
``cargo.json``              where the result has a cargo section: it, the risk's reasons
                            and each review's decisions on the manifest discrepancies
``README.txt``              how to check all this by hand
=========================== =============================================================

:func:`verify_package` checks every hash, every signature and the links between them (the
scan's hash in the signed result against the scan files, the result's hash against
``result.json``, each review against its statement, and ``scan.json``, ``result.json`` and
each review against the audit entries that logged them: ``package_links.py``), and names
each thing that does not match. The package proves who signed; *which* key must be the
service's is for the receiver to know: compare the fingerprint with the one the
administration published (``GET /api/v1/signing-key``), or pass it to ``cargoscan verify
--key-sha256``.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inference.service.cargo_review import CARGO, cargo_part, check_cargo_part
from inference.service.db import iso
from inference.service.signing import (
    Signer,
    b64,
    canonical,
    load_public_key,
    public_key_sha256,
    sha256_hex,
    signature_ok,
    unb64,
)

FORMAT = "cargoscan-evidence/1"
MAX_UNPACKED_BYTES = 4 << 30  # two 16-bit channels of the largest scans fit many times
RESULT_STATEMENT = "cargoscan/result-statement/1"
REVIEW_STATEMENT = "cargoscan/review-statement/1"
MANIFEST, MANIFEST_SIG = "manifest.json", "manifest.sig"
KEY_FILE = "public_key.pem"
RESULT, RESULT_STMT = "result.json", "result.statement.json"
REVIEWS, SIGNATURES, AUDIT, SCAN, README = (
    "reviews.json",
    "signatures.json",
    "audit.json",
    "scan.json",
    "README.txt",
)


def image_suffix(data: bytes) -> str:
    """The file name suffix of a scan channel's bytes (by their magic number)."""
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ".tiff"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    return ".bin"


# --------------------------------------------------------------------------- statements


def result_statement(
    *,
    result_id: int,
    created_at: datetime,
    high_sha256: str,
    low_sha256: str | None,
    body: dict[str, Any],
    preprocess_version: str,
    key_sha256: str,
    signed_later: bool = False,
) -> dict[str, Any]:
    """What the service signs about a result. ``signed_later``: signed after it was stored
    (a result from before the service signed), not when it was computed."""
    model = body.get("model") or {}
    return {
        "type": RESULT_STATEMENT,
        "scan_id": body.get("scan_id"),
        "result_id": result_id,
        "created_at": iso(created_at),
        "scan": {"high_sha256": high_sha256, "low_sha256": low_sha256},
        "model": {
            "name": model.get("name"),
            "version": model.get("version"),
            "sha256": model.get("sha256"),
        },
        "preprocess_version": preprocess_version,
        "verdict": body.get("verdict"),
        "risk": body.get("risk"),
        "findings": body.get("findings", []),
        "result_sha256": sha256_hex(canonical(body)),
        "key_sha256": key_sha256,
        "signed_later": signed_later,
    }


def review_dict(review: Any) -> dict[str, Any]:
    """A review (``db.Review`` with its user loaded) as the API shows it; the decisions on
    manifest discrepancies only where there were any (``cargo_review``), so every other
    review hashes as it always has."""
    out = {
        "id": review.id,
        "scan_id": review.scan_id,
        "officer": review.user.name,
        "user_role": review.user_role,
        "created_at": iso(review.created_at),
        "result_id": review.result_id,
        "model_version": review.model_version,
        "findings": review.findings,
        "added": review.added,
        "verdict": review.verdict,
        "comment": review.comment,
    }
    decided = getattr(review, "discrepancies", None)
    if decided:
        out["discrepancies"] = decided
    return out


def review_statement(
    review: dict[str, Any], *, key_sha256: str, signed_later: bool = False
) -> dict[str, Any]:
    """What the service signs about a review (:func:`review_dict`)."""
    return {
        "type": REVIEW_STATEMENT,
        "scan_id": review["scan_id"],
        "review_id": review["id"],
        "review": review,
        "review_sha256": sha256_hex(canonical(review)),
        "key_sha256": key_sha256,
        "signed_later": signed_later,
    }


# --------------------------------------------------------------------------- building


@dataclass
class Signed:
    """A stored signature: the exact statement text and its base64 signature."""

    subject: str
    subject_id: int
    statement: str
    signature: str
    key_sha256: str


@dataclass
class PackageInput:
    """Everything a package holds, gathered from the database and the blob store."""

    scan: dict[str, Any]
    high: bytes
    low: bytes | None
    result: dict[str, Any]
    result_signature: Signed
    reviews: list[tuple[dict[str, Any], Signed]]
    audit_entries: list[dict[str, Any]]
    audit_head: tuple[int, str] | None
    exported_by: str


README_TEXT = """\
CargoScan evidence package ({format})

Check it with `cargoscan verify THIS.zip` (add --key-sha256 FINGERPRINT to insist on the
administration's published key), or by hand:

1. public_key.pem is an Ed25519 public key; its fingerprint is the SHA-256 of its 32 raw
   bytes: {key_sha256}. Compare it with the fingerprint the issuing administration
   published.
2. manifest.sig is the base64 Ed25519 signature of the bytes of manifest.json.
3. manifest.json lists the SHA-256 of every other file here.
4. signatures.json has the base64 Ed25519 signature of each *.statement.json file's bytes.
5. result.statement.json holds the SHA-256 of the original scan files (scan/), of the
   canonical JSON of result.json (keys sorted, no spaces, UTF-8), and the findings, the
   model's version and SHA-256 and the pre-processing version the result was made with.
6. Each reviews/ID.statement.json holds the review that reviews.json lists under ID.
7. audit.json has the scan's entries of the service's audit log; each entry's hash is the
   SHA-256 of the canonical JSON of its seq, at, kind, actor, subject, data and prev.
8. cargo.json (where the result has a cargo section) repeats result.json's cargo section,
   verdict, risk and risk reasons, and each review's decisions on the manifest
   discrepancies as reviews.json has them.
"""


def build_package(signer: Signer, item: PackageInput) -> tuple[bytes, dict[str, Any]]:
    """The ZIP bytes and its manifest."""
    members: dict[str, bytes] = {}
    scan_files = {"high": f"scan/high{image_suffix(item.high)}"}
    members[scan_files["high"]] = item.high
    if item.low is not None:
        scan_files["low"] = f"scan/low{image_suffix(item.low)}"
        members[scan_files["low"]] = item.low
    members[SCAN] = _pretty(item.scan)
    members[RESULT] = _pretty(item.result)
    members[RESULT_STMT] = item.result_signature.statement.encode("utf-8")
    sigs = [_sig_entry(RESULT_STMT, item.result_signature)]
    for review, signed in item.reviews:
        name = f"reviews/{int(review['id'])}.statement.json"
        members[name] = signed.statement.encode("utf-8")
        sigs.append(_sig_entry(name, signed))
    members[REVIEWS] = _pretty([r for r, _ in item.reviews])
    members[SIGNATURES] = _pretty(sigs)
    members[AUDIT] = _pretty({"entries": item.audit_entries})
    cargo = cargo_part(item.result, item.result_signature.subject_id, [r for r, _ in item.reviews])
    if cargo is not None:
        members[CARGO] = _pretty(cargo)
    members[KEY_FILE] = signer.public_pem
    members[README] = README_TEXT.format(format=FORMAT, key_sha256=signer.key_sha256).encode()
    manifest = {
        "format": FORMAT,
        "scan_id": item.scan["id"],
        "exported_at": datetime.now(timezone.utc).isoformat(),
        "exported_by": item.exported_by,
        "key_sha256": signer.key_sha256,
        "scan_files": scan_files,
        "audit_head": None
        if item.audit_head is None
        else {"seq": item.audit_head[0], "entry_hash": item.audit_head[1]},
        "members": {
            name: {"sha256": sha256_hex(data), "bytes": len(data)}
            for name, data in sorted(members.items())
        },
    }
    manifest_bytes = _pretty(manifest)
    members[MANIFEST] = manifest_bytes
    members[MANIFEST_SIG] = (signer.sign(manifest_bytes) + "\n").encode("ascii")
    return zip_members(members), manifest


def zip_members(members: dict[str, bytes]) -> bytes:
    """A ZIP of ``members`` (manifest first; images stored, text deflated)."""
    order = [MANIFEST, MANIFEST_SIG, *sorted(set(members) - {MANIFEST, MANIFEST_SIG})]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in order:
            if name not in members:
                continue
            stored = name.startswith("scan/")
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    return buf.getvalue()


def _pretty(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _sig_entry(file: str, signed: Signed) -> dict[str, Any]:
    return {
        "file": file,
        "subject": signed.subject,
        "id": signed.subject_id,
        "key_sha256": signed.key_sha256,
        "signature": signed.signature,
    }


def export_package(
    records: Any, blobs: Any, scan: Any, scan_summary: dict[str, Any], actor: str
) -> bytes:
    """The evidence package of ``scan`` (a ``db.ScanRecord``): signs what the current key
    has not signed yet, builds the ZIP and logs the export (with the manifest's SHA-256)
    in the audit log. ``records``: ``records.Records`` with a signer; ``blobs``: the
    ``storage.BlobStore``."""
    signer: Signer | None = records.signer
    if signer is None:
        raise RuntimeError("the service has no signing key")
    records.sign_unsigned(scan.id, actor)
    results = records.results(scan.id)
    if not results:
        raise LookupError(f"scan {scan.id} has no result")
    current = results[-1]
    reviews = records.reviews(scan.id)
    rsig = records.signatures("result", [current.id], signer.key_sha256)[current.id]
    vsigs = records.signatures("review", [r.id for r in reviews], signer.key_sha256)

    def signed(row: Any) -> Signed:
        return Signed(row.subject, row.subject_id, row.statement, row.signature, row.key_sha256)

    from inference.service.audit import entry_json

    item = PackageInput(
        scan=scan_summary,
        high=blobs.get(scan.high_sha256),
        low=blobs.get(scan.low_sha256) if scan.low_sha256 else None,
        result=current.body,
        result_signature=signed(rsig),
        reviews=[(review_dict(r), signed(vsigs[r.id])) for r in reviews],
        audit_entries=[entry_json(e) for e in records.audit_entries(scan.id)],
        audit_head=records.audit_head(),
        exported_by=actor,
    )
    package, manifest = build_package(signer, item)
    records.audit_event(
        "evidence.exported",
        actor,
        scan.id,
        {
            "manifest_sha256": sha256_hex(_pretty(manifest)),  # the bytes written
            "package_sha256": sha256_hex(package),
            "result_id": current.id,
            "reviews": len(reviews),
        },
    )
    return package


# --------------------------------------------------------------------------- checking


@dataclass
class PackageReport:
    """What :func:`verify_package` found; ``problems`` name the member for each."""

    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    scan_id: str | None = None
    key_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def read_members(data: bytes) -> tuple[dict[str, bytes], list[str]]:
    """Every member's bytes, and a problem for each one the ZIP itself finds damaged."""
    problems: list[str] = []
    members: dict[str, bytes] = {}
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        return {}, [f"the package is not a readable ZIP file ({exc})"]
    with zf:
        total = sum(info.file_size for info in zf.infolist())
        if total > MAX_UNPACKED_BYTES:  # a package is checked before anyone trusts it
            return {}, [f"the package unpacks to {total:,} bytes, over {MAX_UNPACKED_BYTES:,}"]
        for info in zf.infolist():
            if info.is_dir():
                continue
            if info.filename in members:
                problems.append(f"{info.filename}: the ZIP holds two members of this name")
                continue
            try:
                members[info.filename] = zf.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
                problems.append(f"{info.filename}: damaged in the ZIP ({exc})")
    return members, problems


def _json(members: dict[str, bytes], name: str, problems: list[str]) -> Any:
    data = members.get(name)
    if data is None:
        problems.append(f"{name}: missing from the package")
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        problems.append(f"{name}: not valid JSON ({exc})")
        return None


def verify_package(
    source: bytes | str | Path, expected_key_sha256: str | None = None
) -> PackageReport:
    """Check an evidence package with nothing but its bytes (see the module docstring)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    report = PackageReport()
    members, problems = read_members(data)
    report.problems = problems
    if not members:
        return report
    p = report.problems

    # 1. the key, and the manifest it signs
    key = None
    pem = members.get(KEY_FILE)
    if pem is None:
        p.append(f"{KEY_FILE}: missing from the package")
    else:
        try:
            key = load_public_key(pem)
            report.key_sha256 = public_key_sha256(pem)
        except (ValueError, TypeError) as exc:
            p.append(f"{KEY_FILE}: not an Ed25519 public key in PEM ({exc})")
    if (
        expected_key_sha256
        and report.key_sha256
        and (report.key_sha256 != expected_key_sha256.strip().lower())
    ):
        p.append(
            f"{KEY_FILE}: the key's fingerprint is {report.key_sha256}, not the expected "
            f"{expected_key_sha256.strip().lower()} (signed by another key)"
        )
    manifest = _json(members, MANIFEST, p)
    sig_text = members.get(MANIFEST_SIG)
    if sig_text is None:
        p.append(f"{MANIFEST_SIG}: missing from the package")
    elif key is not None and MANIFEST in members:
        # Exactly base64 + newline: a byte changed anywhere, even in the padding bits, fails.
        text = sig_text.decode("ascii", "replace")
        try:
            canonical_form = b64(unb64(text.removesuffix("\n"))) + "\n"
        except ValueError:
            canonical_form = ""
        if canonical_form != text:
            p.append(f"{MANIFEST_SIG}: not one base64 Ed25519 signature and a newline")
        elif signature_ok(key, text.strip(), members[MANIFEST]):
            report.checked.append(f"{MANIFEST}: signed by the key in {KEY_FILE}")
        else:
            p.append(
                f"{MANIFEST_SIG}: the signature of {MANIFEST} does not verify with "
                f"{KEY_FILE}: one of the three was changed"
            )
    if not isinstance(manifest, dict):
        if manifest is not None:
            p.append(f"{MANIFEST}: not a JSON object")
        return report
    report.scan_id = manifest.get("scan_id")
    if manifest.get("format") != FORMAT:
        p.append(f"{MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if report.key_sha256 and manifest.get("key_sha256") != report.key_sha256:
        p.append(
            f"{MANIFEST}: names key {manifest.get('key_sha256')}, but {KEY_FILE} is "
            f"{report.key_sha256}"
        )

    # 2. every member against its hash in the manifest
    listed = manifest.get("members") if isinstance(manifest.get("members"), dict) else {}
    if not listed:
        p.append(f"{MANIFEST}: lists no members")
    for name, entry in sorted(listed.items()):
        got = members.get(name)
        want = entry.get("sha256") if isinstance(entry, dict) else None
        if got is None:
            p.append(f"{name}: listed in the manifest but missing from the package")
        elif sha256_hex(got) != want:
            p.append(
                f"{name}: SHA-256 {sha256_hex(got)} does not match the manifest's {want} "
                "(the file was changed)"
            )
    for name in sorted(set(members) - set(listed) - {MANIFEST, MANIFEST_SIG}):
        p.append(f"{name}: in the package but not in the manifest")
    if listed and all(
        name in members and sha256_hex(members[name]) == (e or {}).get("sha256")
        for name, e in listed.items()
    ):
        report.checked.append(f"{len(listed)} members: SHA-256 as in the manifest")

    # 3. the signed statements
    signed_files = _check_signatures(members, key, report)

    # 4. what the statements say against the files they speak of
    _check_result(members, manifest, signed_files, report)
    _check_reviews(members, manifest, signed_files, report)
    _check_audit(members, manifest, report)
    _check_links(members, manifest, signed_files.get(RESULT_STMT), report)
    _check_cargo(members, signed_files.get(RESULT_STMT), report)
    return report


def _check_cargo(
    members: dict[str, bytes], statement: dict[str, Any] | None, report: PackageReport
) -> None:
    """cargo.json, result.json and reviews.json say the same of the cargo and of the
    decisions on its manifest discrepancies (``cargo_review``)."""
    quiet: list[str] = []  # each file's own problems were reported above
    part = _json(members, CARGO, report.problems) if CARGO in members else None
    result = _json(members, RESULT, quiet)
    problems = check_cargo_part(
        part, result, _json(members, REVIEWS, quiet), (statement or {}).get("result_id")
    )
    report.problems.extend(problems)
    if part is not None and not problems:
        report.checked.append(f"{CARGO} matches result.json and reviews.json")


def _check_links(
    members: dict[str, bytes],
    manifest: dict[str, Any],
    statement: dict[str, Any] | None,
    report: PackageReport,
) -> None:
    """scan.json, result.json and reviews.json against the package's audit entries."""
    from inference.service.package_links import cross_check

    quiet: list[str] = []  # each file's own problems were reported above
    audit = _json(members, AUDIT, quiet)
    entries = audit.get("entries") if isinstance(audit, dict) else None
    if not isinstance(entries, list):
        return
    problems, checked = cross_check(
        scan_id=manifest.get("scan_id"),
        scan=_json(members, SCAN, quiet),
        result=_json(members, RESULT, quiet),
        reviews=_json(members, REVIEWS, quiet),
        entries=entries,
        result_id=(statement or {}).get("result_id"),
    )
    report.problems.extend(problems)
    report.checked.extend(checked)


def _check_signatures(
    members: dict[str, bytes], key: Any, report: PackageReport
) -> dict[str, dict[str, Any]]:
    """The statement files whose signature verifies, by name."""
    p = report.problems
    sigs = _json(members, SIGNATURES, p)
    good: dict[str, dict[str, Any]] = {}
    if not isinstance(sigs, list):
        if sigs is not None:
            p.append(f"{SIGNATURES}: not a list")
        return good
    for k, entry in enumerate(sigs):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            p.append(f"{SIGNATURES}: entry {k} names no file")
            continue
        name = entry["file"]
        data = members.get(name)
        if data is None:
            p.append(f"{name}: signed in {SIGNATURES} but missing from the package")
            continue
        if entry.get("key_sha256") != report.key_sha256:
            p.append(f"{name}: signed by key {entry.get('key_sha256')}, not by {KEY_FILE}")
            continue
        if key is None or not signature_ok(key, str(entry.get("signature", "")), data):
            p.append(
                f"{name}: its signature in {SIGNATURES} does not verify "
                "(the statement or its signature was changed)"
            )
            continue
        try:
            good[name] = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:  # signed, yet not JSON: not ours
            p.append(f"{name}: signed but not valid JSON ({exc})")
    if good:
        report.checked.append(f"{len(good)} statement signature(s) verify")
    return good


def _check_result(
    members: dict[str, bytes],
    manifest: dict[str, Any],
    signed: dict[str, dict[str, Any]],
    report: PackageReport,
) -> None:
    p = report.problems
    statement = signed.get(RESULT_STMT)
    if statement is None:
        if RESULT_STMT in members and not any(RESULT_STMT in x for x in p):
            p.append(f"{RESULT_STMT}: not signed in {SIGNATURES}")
        elif RESULT_STMT not in members:
            p.append(f"{RESULT_STMT}: missing from the package")
        return
    if statement.get("type") != RESULT_STATEMENT:
        p.append(f"{RESULT_STMT}: not a result statement ({statement.get('type')!r})")
    if statement.get("scan_id") != manifest.get("scan_id"):
        p.append(
            f"{RESULT_STMT}: signed for scan {statement.get('scan_id')}, but the package is "
            f"for scan {manifest.get('scan_id')}"
        )
    files = manifest.get("scan_files") if isinstance(manifest.get("scan_files"), dict) else {}
    said = statement.get("scan") if isinstance(statement.get("scan"), dict) else {}
    for channel in ("high", "low"):
        want = said.get(f"{channel}_sha256")
        name = files.get(channel)
        if want is None and name is None:
            continue
        if name is None or name not in members:
            p.append(
                f"{RESULT_STMT}: signs a {channel} channel (SHA-256 {want}) that the package "
                "does not hold"
            )
            continue
        got = sha256_hex(members[name])
        if got != want:
            p.append(
                f"{name}: SHA-256 {got} is not the scan hash in the signed result "
                f"({RESULT_STMT} says {want}): these are not the bytes that were analysed"
            )
    result = _json(members, RESULT, p)
    if result is not None:
        got = sha256_hex(canonical(result))
        if got != statement.get("result_sha256"):
            p.append(
                f"{RESULT}: its canonical SHA-256 {got} is not the one in the signed result "
                f"({statement.get('result_sha256')}): the result was changed"
            )
    scan = _json(members, SCAN, p)
    if isinstance(scan, dict):
        for channel in ("high", "low"):
            if scan.get(f"{channel}_sha256") != said.get(f"{channel}_sha256"):
                p.append(f"{SCAN}: {channel}_sha256 differs from the signed result's")
    if not any(RESULT in x or RESULT_STMT in x or "scan/" in x for x in p):
        report.checked.append("the signed result matches result.json and the scan files")


def _check_reviews(
    members: dict[str, bytes],
    manifest: dict[str, Any],
    signed: dict[str, dict[str, Any]],
    report: PackageReport,
) -> None:
    p = report.problems
    reviews = _json(members, REVIEWS, p)
    if not isinstance(reviews, list):
        if reviews is not None:
            p.append(f"{REVIEWS}: not a list")
        return
    before = len(p)
    for review in reviews:
        rid = review.get("id") if isinstance(review, dict) else None
        name = f"reviews/{rid}.statement.json"
        statement = signed.get(name)
        if statement is None:
            if not any(name in x for x in p):
                p.append(f"{REVIEWS}: review {rid} has no signed statement ({name})")
            continue
        if statement.get("type") != REVIEW_STATEMENT:
            p.append(f"{name}: not a review statement ({statement.get('type')!r})")
        if statement.get("scan_id") != manifest.get("scan_id"):
            p.append(f"{name}: signed for scan {statement.get('scan_id')}, not this one")
        if canonical(statement.get("review")) != canonical(review):
            p.append(f"{REVIEWS}: review {rid} differs from its signed statement {name}")
    if len(p) == before:
        report.checked.append(f"{len(reviews)} review(s) match their signed statements")


def _check_audit(members: dict[str, bytes], manifest: dict[str, Any], report: PackageReport):
    from inference.service.audit import json_entry_ok

    p = report.problems
    audit = _json(members, AUDIT, p)
    entries = audit.get("entries") if isinstance(audit, dict) else None
    if not isinstance(entries, list):
        if audit is not None:
            p.append(f"{AUDIT}: no list of entries")
        return
    before = len(p)
    for entry in entries:
        try:
            ok = json_entry_ok(entry)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            seq = entry.get("seq") if isinstance(entry, dict) else "?"
            p.append(f"{AUDIT}: entry #{seq} does not hash to its entry_hash")
        elif entry.get("subject") != manifest.get("scan_id"):
            p.append(f"{AUDIT}: entry #{entry.get('seq')} is about another subject")
    stmt = members.get(RESULT_STMT)
    if stmt is not None:
        digest = sha256_hex(stmt)
        logged = {
            (e.get("data") or {}).get("statement_sha256")
            for e in entries
            if isinstance(e, dict) and e.get("kind") in ("result", "result.signed")
        }
        if digest not in logged:
            p.append(f"{AUDIT}: no entry logs the signing of {RESULT_STMT} (SHA-256 {digest})")
    if len(p) == before:
        report.checked.append(f"{len(entries)} audit entries hash correctly")
