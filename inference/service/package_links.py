"""An evidence package's parts checked against each other: ``scan.json``, ``result.json``
and ``reviews.json`` against the audit entries the package carries (``audit.json``).

Why: the manifest's signature proves the package is what the service exported, not that
what it exported was true. A scan record edited in the database (its vehicle id, its
station scan id) goes out in ``scan.json`` under a valid signature; the entry the service
wrote when the scan arrived still says what was received. So ``cargoscan verify`` holds
each part against its entry (``evidence.verify_package`` calls :func:`cross_check`).
"""

from __future__ import annotations

from typing import Any

from inference.service.facts import SCAN_ENTRY_FIELDS, fact_sha256, scan_fact
from inference.service.signing import canonical, sha256_hex


def cross_check(
    *,
    scan_id: Any,
    scan: Any,
    result: Any,
    reviews: Any,
    entries: list[Any],
    result_id: Any,
) -> tuple[list[str], list[str]]:
    """(problems, what checked out). ``result_id``: the result the signed statement names.
    The channel files themselves are checked against the signed result elsewhere."""
    problems: list[str] = []
    checked: list[str] = []
    good = [e for e in entries if isinstance(e, dict) and isinstance(e.get("data"), dict)]
    if isinstance(scan, dict):
        if scan.get("id") != scan_id:
            problems.append(f"scan.json: describes scan {scan.get('id')}, not {scan_id}")
        received = [e for e in good if e.get("kind") == "scan.received"]
        if received:
            data = received[0]["data"]
            fields = [k for k in SCAN_ENTRY_FIELDS if k in data and not k.endswith("_bytes")]
            differ = [k for k in fields if scan.get(k) != data[k]]
            recorded = data.get("scan_sha256")
            if recorded is not None and recorded != fact_sha256(scan_fact(scan)):
                differ.append("the record's hash (station, times or metadata)")
            if differ:
                problems.append(
                    f"scan.json: {', '.join(differ)} differ from the scan.received audit entry "
                    f"#{received[0].get('seq')}: the scan record was changed after it arrived"
                )
            else:
                checked.append("scan.json matches the audit entry of its arrival")
    if isinstance(result, dict):
        logged = [
            e for e in good if e.get("kind") == "result" and e["data"].get("result_id") == result_id
        ]
        if not logged:
            problems.append(f"audit.json: no entry logs result {result_id} of the package")
        else:
            data = logged[0]["data"]
            if data.get("result_sha256") != sha256_hex(canonical(result)):
                problems.append(
                    f"result.json: differs from what audit entry #{logged[0].get('seq')} "
                    "logged when the result was stored"
                )
            elif data.get("verdict") != result.get("verdict"):
                problems.append(f"result.json: its verdict is not the logged {data.get('verdict')}")
            else:
                checked.append("result.json matches the audit entry that stored it")
    if isinstance(reviews, list):
        before = len(problems)
        for review in reviews:
            rid = review.get("id") if isinstance(review, dict) else None
            logged = [
                e for e in good if e.get("kind") == "review" and e["data"].get("review_id") == rid
            ]
            if not logged:
                problems.append(f"audit.json: no entry logs review {rid}")
            elif logged[0]["data"].get("review_sha256") != fact_sha256(review):
                problems.append(
                    f"reviews.json: review {rid} differs from audit entry #{logged[0].get('seq')}"
                )
        if reviews and len(problems) == before:
            checked.append(f"{len(reviews)} review(s) match their audit entries")
    return problems, checked
