"""Running and administering the service, for officers' administrators: `serve`, the
`station`, `user`, `reviews`, `model` and `audit` actions on its database or a running
server, and `verify` for an evidence package offline. Torch-free."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cargoscan.cli.common import (
    Subcommands,
    add_db_flags,
    add_output_folder,
    fail,
    open_service_records,
    service_settings,
)


def add_serve(sub: Subcommands) -> None:
    p = sub.add_parser(
        "serve",
        help="run the scanner API (HTTP); every setting also as CARGOSCAN_* variable",
        description="Serve the scanner API, the Open Inference Protocol, /healthz, /readyz "
        "and /metrics. Settings come from CARGOSCAN_* environment variables (DATA_DIR, "
        "DATABASE_URL, MODEL_PATH, ADMIN_KEY, WORKERS, QUEUE_SIZE, MAX_BODY_BYTES, "
        "MAX_PIXELS, DRAIN_TIMEOUT_S, ...); the flags override them.",
    )
    p.add_argument("--host", default=None, help="default $CARGOSCAN_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default $CARGOSCAN_PORT or 8000")
    p.add_argument("--model", type=Path, default=None, help="MODEL.onnx to serve at start")
    p.add_argument(
        "--operating-point",
        type=Path,
        default=None,
        help="a site's operating point for that model (cargoscan commission)",
    )
    p.add_argument("--workers", type=int, default=None, help="inference threads (default 1)")
    add_db_flags(p)
    p.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from inference.service.server import serve

    settings = service_settings(
        args,
        host=args.host,
        port=args.port,
        model_path=args.model,
        operating_point=args.operating_point,
        workers=args.workers,
    )
    serve(settings)
    return 0


def add_station(sub: Subcommands) -> None:
    p = sub.add_parser("station", help="scanner stations and their API keys")
    ssub = p.add_subparsers(dest="station_command", required=True, metavar="ACTION")
    add = ssub.add_parser("add", help="add a station and print its new API key (shown once)")
    add.add_argument("name", help="station name, e.g. port-gate-3")
    add_db_flags(add)
    add.set_defaults(handler=_run_station_add)
    ls = ssub.add_parser("list", help="list the stations")
    add_db_flags(ls)
    ls.set_defaults(handler=_run_station_list)
    rev = ssub.add_parser(
        "revoke",
        help="refuse a station's keys from now on (its scans stay)",
        description="The station's current key (and a previous one still in its grace "
        "period) get 401 from the next request on. Logged in the audit log.",
    )
    rev.add_argument("name", help="the station")
    add_db_flags(rev)
    rev.set_defaults(handler=_run_station_revoke)
    rot = ssub.add_parser(
        "rotate",
        help="give a station a new API key (printed once); the old one valid --grace seconds",
        description="Prints a new key for the station. Its current key stays valid for "
        "--grace seconds (time to install the new one on the station), then gets 401; a key "
        "older than the current one is refused at once. Logged in the audit log.",
    )
    rot.add_argument("name", help="the station")
    rot.add_argument(
        "--grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long the current key stays valid (default 0: not at all; at most 30 days)",
    )
    add_db_flags(rot)
    rot.set_defaults(handler=_run_station_rotate)


def _run_station_add(args: argparse.Namespace) -> int:
    from inference.service.auth import hash_key, new_key
    from inference.service.records import DuplicateName

    name = args.name.strip()
    if not name or len(name) > 100:
        return fail("station add", "NAME must be 1-100 characters")
    key = new_key()
    with open_service_records(service_settings(args)) as records:
        try:
            records.add_station(name, hash_key(key))
        except DuplicateName as exc:
            return fail("station add", str(exc))
    print(f"station {name!r} added; its API key (shown once, store it now):", file=sys.stderr)
    print(key)
    return 0


def _run_station_list(args: argparse.Namespace) -> int:
    with open_service_records(service_settings(args)) as records:
        for st in records.stations():
            state = f"revoked {st.revoked_at.isoformat()}" if st.revoked_at else "active"
            print(f"{st.name}\t{st.created_at.isoformat()}\t{state}")
    return 0


def _run_station_revoke(args: argparse.Namespace) -> int:
    from inference.service.records import StationRevoked

    with open_service_records(service_settings(args)) as records:
        try:
            station = records.revoke_station(args.name)
        except StationRevoked as exc:
            return fail("station revoke", str(exc))
    if station is None:
        return fail("station revoke", f"no station {args.name!r}")
    print(f"station {args.name!r} revoked: its keys are refused from now on")
    return 0


def _run_station_rotate(args: argparse.Namespace) -> int:
    import math

    from inference.service.auth import hash_key, new_key
    from inference.service.records import StationRevoked
    from inference.service.records.stations import MAX_GRACE_S

    if not (math.isfinite(args.grace) and 0 <= args.grace <= MAX_GRACE_S):
        return fail("station rotate", f"--grace must be 0-{MAX_GRACE_S} seconds")
    key = new_key()
    with open_service_records(service_settings(args)) as records:
        try:
            station = records.rotate_station_key(args.name, hash_key(key), args.grace)
        except StationRevoked as exc:
            return fail("station rotate", str(exc))
    if station is None:
        return fail("station rotate", f"no station {args.name!r}")
    until = station.previous_key_expires_at
    old = f"valid until {until.isoformat()}" if until else "refused from now on"
    print(
        f"station {args.name!r}: new API key (shown once, store it now); the old key is {old}:",
        file=sys.stderr,
    )
    print(key)
    return 0


def add_model(sub: Subcommands) -> None:
    p = sub.add_parser("model", help="the serving model of a running service")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    act = msub.add_parser(
        "activate",
        help="roll out MODEL.onnx on a running server: load, warm up, check, swap",
        description="Asks a running server (admin API, key from --admin-key or "
        "$CARGOSCAN_ADMIN_KEY) to load PATH (a path on the server's machine), warm it up, "
        "check it on recent scans and swap it in. If a step fails the old model keeps serving.",
    )
    act.add_argument("path", type=Path, help="MODEL.onnx with its .json card beside it")
    act.add_argument(
        "--operating-point",
        type=Path,
        default=None,
        help="a site's operating point for that model (a path on the server's machine)",
    )
    act.add_argument("--url", default=None, help="server URL (default http://HOST:PORT)")
    act.add_argument("--admin-key", default=None, help="default $CARGOSCAN_ADMIN_KEY")
    act.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    act.set_defaults(handler=_run_model_activate)


def _run_model_activate(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    settings = service_settings(args)
    key = args.admin_key or (settings.admin_key.get_secret_value() if settings.admin_key else "")
    if not key:
        return fail("model activate", "no admin key (--admin-key or CARGOSCAN_ADMIN_KEY)")
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    req = urllib.request.Request(
        f"{url}/api/v1/admin/model",
        data=json.dumps(
            {
                "path": str(args.path.expanduser().resolve()),
                "operating_point": str(args.operating_point.expanduser().resolve())
                if args.operating_point
                else None,
            }
        ).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except (ValueError, AttributeError):
            detail = exc.reason
        return fail("model activate", f"{exc.code}: {detail}", status=1)
    except (urllib.error.URLError, OSError) as exc:
        return fail("model activate", f"cannot reach {url}: {exc}", status=1)
    previous = body["previous"]["version"] if body.get("previous") else "none"
    print(f"serving {body['model']['version']} (was {previous})")
    print(json.dumps(body, indent=1))
    return 0


def add_user(sub: Subcommands) -> None:
    p = sub.add_parser("user", help="officers' accounts (officer, supervisor, admin)")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = usub.add_parser(
        "add",
        help="add an account; the password is read from standard input or asked for",
        description="Roles: officers review scans; supervisors also see every review and "
        "re-open scans; admins also manage stations, users and models.",
    )
    add.add_argument("name", help="user name, e.g. j.smith")
    add.add_argument("--role", required=True, choices=("officer", "supervisor", "admin"))
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (e.g. from a secret store), not a prompt",
    )
    add_db_flags(add)
    add.set_defaults(handler=_run_user_add)
    ls = usub.add_parser("list", help="list the accounts")
    add_db_flags(ls)
    ls.set_defaults(handler=_run_user_list)


def _read_password(from_stdin: bool) -> str | None:
    """The new password: one line of standard input, or typed twice at a prompt."""
    import getpass

    if from_stdin:
        return sys.stdin.read().rstrip("\r\n")
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        fail("user add", "the passwords differ")
        return None
    return first


def _run_user_add(args: argparse.Namespace) -> int:
    from inference.service.auth import check_password, check_user_name, hash_password
    from inference.service.records import DuplicateName

    problem = check_user_name(args.name)
    if problem:
        return fail("user add", f"NAME: {problem}")
    password = _read_password(args.password_stdin)
    if password is None:
        return fail("user add", "no password (use --password-stdin)")
    problem = check_password(password)
    if problem:
        return fail("user add", f"the password must have {problem}")
    with open_service_records(service_settings(args)) as records:
        try:
            records.add_user(args.name, args.role, hash_password(password))
        except DuplicateName as exc:
            return fail("user add", str(exc))
    print(f"user {args.name!r} added as {args.role}")
    return 0


def _run_user_list(args: argparse.Namespace) -> int:
    with open_service_records(service_settings(args)) as records:
        for u in records.users():
            state = "active" if u.active else "inactive"
            print(f"{u.name}\t{u.role}\t{state}\t{u.created_at.isoformat()}")
    return 0


def add_reviews(sub: Subcommands) -> None:
    p = sub.add_parser("reviews", help="officers' reviews of scans")
    rsub = p.add_subparsers(dest="reviews_command", required=True, metavar="ACTION")
    exp = rsub.add_parser(
        "export",
        help="write the reviewed scans as a training data set (the COCO layout of synth)",
        description="Each reviewed scan's latest review is its ground truth: the findings "
        "officers accepted or re-labelled and the boxes they drew; scans released with none "
        "are clean. The original 16-bit images are copied unchanged, so "
        "`cargoscan train --data OUT --data data/synth` fine-tunes on them as they are.",
    )
    add_output_folder(exp)
    exp.add_argument(
        "--since",
        default=None,
        metavar="DATE",
        help="only scans reviewed at or after DATE (ISO 8601; UTC unless it says)",
    )
    exp.add_argument(
        "--model",
        type=Path,
        default=None,
        help="MODEL.onnx whose card gives the categories (default: the model the service "
        "served last, else its configured model)",
    )
    add_db_flags(exp)
    exp.set_defaults(handler=_run_reviews_export)


def _run_reviews_export(args: argparse.Namespace) -> int:
    from inference.service.export import card_categories, export_reviews, parse_since
    from inference.service.storage import BlobStore

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        return fail("reviews export", f"--since: {exc}")
    settings = service_settings(args)
    with open_service_records(settings) as records:
        model = args.model
        if model is None:
            last = records.latest_activation()
            model = Path(last.path) if last is not None else settings.model_path
        if model is None:
            return fail("reviews export", "no model card: pass --model")
        try:
            categories = card_categories(model)
        except ValueError as exc:
            return fail("reviews export", str(exc))
        blobs = BlobStore(settings.data_dir / "blobs")
        summary = export_reviews(records, blobs, args.out, categories, since)
    print(summary)
    return 0


def add_audit(sub: Subcommands) -> None:
    p = sub.add_parser("audit", help="the service's hash-chained audit log")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    ver = asub.add_parser(
        "verify",
        help="re-hash the audit log, check every link and every stored record against it",
        description="Exit 0 when every entry hashes to its stored hash and links to the one "
        "before it, and every scan, result, review, re-opening, signature, station, user, "
        "live session and model activation in the database is what its entry recorded; 1 "
        "naming the first broken entry or each changed, added or deleted record. "
        "Prints the head's hash; --anchor checks anchors from `cargoscan audit anchor` "
        "(a cut-off tail shows there).",
    )
    ver.add_argument(
        "--anchor",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="an anchor the log must still hold (repeatable)",
    )
    add_db_flags(ver)
    ver.set_defaults(handler=_run_audit_verify)
    anc = asub.add_parser(
        "anchor",
        help="write the log's head (position and hash) signed by the service's key",
        description="Prints (or writes to --out) a JSON anchor of the audit log's head, "
        "signed with the service's signing key. Keep anchors where the database's owner "
        "cannot change them, e.g. from cron every hour; `cargoscan audit verify --anchor "
        "FILE` then finds entries removed after it was taken. Taking one is logged "
        "(audit.anchored); the admin API's POST /api/v1/admin/audit/anchor does the same.",
    )
    anc.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    add_db_flags(anc)
    anc.set_defaults(handler=_run_audit_anchor)


def _service_signer(settings: Any) -> Any:
    """The service's signing key (a ``signing.Signer``), without making one (None: none)."""
    from inference.service.signing import DEFAULT_KEY_FILE, SigningKeyError, load_or_create

    configured = getattr(settings, "signing_key_path", None)
    path = configured or Path(settings.data_dir) / DEFAULT_KEY_FILE
    try:
        return load_or_create(Path(path).expanduser(), create=False)
    except SigningKeyError:
        return None


def _run_audit_verify(args: argparse.Namespace) -> int:
    from inference.service.anchor import check_anchor
    from inference.service.audit import verify_chain
    from inference.service.coverage import verify_records

    settings = service_settings(args)
    anchors = []
    for path in args.anchor:
        try:
            anchors.append((path, path.read_bytes()))
        except OSError as exc:
            return fail("audit verify", f"--anchor {path}: {exc.strerror or exc}")
    signer = _service_signer(settings)
    public_pem = signer.public_pem if signer is not None else None
    with open_service_records(settings) as records:
        report = verify_chain(records.engine)
        coverage = verify_records(records.engine, public_pem) if report.ok else None
        key = signer.key_sha256 if signer is not None and anchors else None
        checks = [(p, check_anchor(records.engine, text, key)) for p, text in anchors]
    if not report.ok:
        print(f"audit log BROKEN at entry #{report.broken_seq}: {report.problem}", file=sys.stderr)
        print(f"({report.entries} entries before it check out)", file=sys.stderr)
        return 1
    failed = False
    assert coverage is not None
    if not coverage.ok:
        failed = True
        print(
            f"stored records DO NOT MATCH the audit log: {len(coverage.problems) + coverage.more}"
            " problem(s):",
            file=sys.stderr,
        )
        for problem in coverage.problems:
            print(f"  {problem}", file=sys.stderr)
        if coverage.more:
            print(f"  ... and {coverage.more} more", file=sys.stderr)
    for path, check in checks:
        if check.ok:
            print(f"anchor {path}: OK (entry #{check.seq} as of {check.at})")
        else:
            failed = True
            print(f"anchor {path}: FAILED: {check.problem}", file=sys.stderr)
    if key is None and anchors:
        print("  (no signing key here: anchors checked against their own key only)")
    for note in coverage.notes:
        print(f"  ({note})")
    if failed:
        return 1
    counts = ", ".join(f"{n} {kind}" for kind, n in coverage.checked.items())
    print(f"audit log OK: {report.entries} entries, head #{report.head_seq} {report.head_hash}")
    print(f"records OK: {counts} match their entries")
    return 0


def _run_audit_anchor(args: argparse.Namespace) -> int:
    from inference.service.anchor import take_anchor
    from inference.service.signing import SigningKeyError, signer_for

    settings = service_settings(args)
    try:
        signer = signer_for(settings)
    except SigningKeyError as exc:
        return fail("audit anchor", str(exc))
    with open_service_records(settings) as records:
        try:
            anchor = take_anchor(records.engine, signer, "cli")
        except RuntimeError as exc:
            return fail("audit anchor", str(exc))
    head = (anchor["statement"]["seq"], anchor["statement"]["entry_hash"])
    text = json.dumps(anchor, indent=1) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        return fail("audit anchor", f"--out {args.out}: {exc.strerror or exc}")
    print(f"anchored entry #{head[0]} {head[1]} in {args.out}", file=sys.stderr)
    return 0


def add_verify(sub: Subcommands) -> None:
    p = sub.add_parser(
        "verify",
        help="check an evidence package (GET /api/v1/scans/ID/evidence) offline",
        description="Checks every file's SHA-256 against the signed manifest, every "
        "signature, and that the signed result names these scan bytes and this result. No "
        "database or network needed. Exit 0 if all holds, 1 naming each thing that does not.",
    )
    p.add_argument("package", type=Path, help="the evidence ZIP")
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--key-sha256",
        default=None,
        help="the fingerprint the administration published: refuse packages by other keys",
    )
    key.add_argument(
        "--public-key", type=Path, default=None, help="the expected public key (PEM file)"
    )
    p.set_defaults(handler=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from inference.service.evidence import verify_package
    from inference.service.signing import public_key_sha256

    expected = args.key_sha256
    try:
        if args.public_key is not None:
            expected = public_key_sha256(args.public_key.read_bytes())
        data = args.package.read_bytes()
    except (OSError, ValueError) as exc:
        return fail("verify", str(exc))
    report = verify_package(data, expected)
    if not report.ok:
        print(f"FAILED: {args.package}: {len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"OK: evidence for scan {report.scan_id}, signed by key sha256 {report.key_sha256}")
    for line in report.checked:
        print(f"  {line}")
    if expected is None:
        print("  (compare the key's fingerprint with the one the administration published)")
    return 0
