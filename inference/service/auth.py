"""Who is asking: station API keys, user accounts and the admin key, as FastAPI dependencies.

Three kinds of caller, each with ``Authorization: Bearer <secret>``:

- a **station** (``cs_`` key): posts scans, reads only its own;
- a **user** (``csu_`` token from ``POST /api/v1/auth/login``): an officer, supervisor or
  admin; reads every station's scans. The page sends the same token as the
  ``cargoscan_session`` cookie instead;
- the **admin key** (``CARGOSCAN_ADMIN_KEY``), for the operator: the admin role without
  being anybody, so it manages and reads but cannot write a review (a review is a person's).

Keys and tokens are 32 random bytes; the database keeps only their SHA-256. A slow hash
would add nothing for them: 256 bits cannot be brute-forced, and a plain hash is looked up
by index in one query. Passwords are what people choose, so they get Argon2id.

CSRF: a cookie is sent by the browser on its own, so a state-changing request (POST, PUT,
PATCH, DELETE) authenticated by the cookie must also carry ``X-CSRF-Token``, a value the
page reads from the ``cargoscan_csrf`` cookie (another site can neither read it nor compute
it: it is derived from the session token). Bearer requests need no such header: nothing
sends an Authorization header on its own. The cookies are ``SameSite=Strict`` as well.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException, Request

KEY_PREFIX = "cs_"
TOKEN_PREFIX = "csu_"
SESSION_COOKIE = "cargoscan_session"
CSRF_COOKIE = "cargoscan_csrf"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_TTL = timedelta(hours=12)  # one shift; then log in again
ROLES = ("officer", "supervisor", "admin")  # each may do what the ones before it may
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024


def new_key() -> str:
    """A fresh station API key (shown once, never stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_token() -> str:
    """A fresh user token (handed out at login, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def csrf_for(token: str) -> str:
    """The CSRF value of a session: only someone who holds the token can compute it."""
    return hmac.new(b"cargoscan-csrf", token.encode("utf-8"), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- passwords


@lru_cache(maxsize=1)
def _hasher():  # -> argon2.PasswordHasher; imported on first use
    from argon2 import PasswordHasher

    return PasswordHasher()  # Argon2id, RFC 9106 low-memory parameters


def hash_password(password: str) -> str:
    return _hasher().hash(password)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password("not a password anyone has")


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; an unknown user (None) costs the same time."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """The hash was made with weaker parameters than today's: re-hash at the next login."""
    return _hasher().check_needs_rehash(password_hash)


def check_user_name(name: str) -> str | None:
    """What is wrong with a user name, or None."""
    if not USER_NAME.match(name):
        return "1-100 letters, digits and . _ @ -, starting with a letter or digit"
    return None


def check_password(password: str) -> str | None:
    """What is wrong with a password, or None."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        return f"{MIN_PASSWORD}-{MAX_PASSWORD} characters"
    if "\x00" in password:
        return "no NUL characters"
    return None


# --------------------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a station (``station_id``), a user (``user_id`` and
    ``role``) or the admin key (``role`` admin, no user)."""

    name: str
    station_id: int | None = None
    user_id: int | None = None
    role: str | None = None
    via_cookie: bool = False

    @property
    def is_station(self) -> bool:
        return self.station_id is not None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_user(self) -> bool:
        """A person's account (not a station, not the admin key)."""
        return self.user_id is not None

    def has_role(self, role: str) -> bool:
        """At least ``role`` (officer < supervisor < admin); stations have none."""
        return self.role is not None and ROLES.index(self.role) >= ROLES.index(role)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="cargoscan"'})


def _credentials(request: Request) -> tuple[str, bool]:
    """The secret presented and whether it came as the session cookie."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        return key.strip(), False
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, True
    raise _unauthorized("missing API key: send 'Authorization: Bearer <key>', or log in")


def _is_admin_key(request: Request, key: str) -> bool:
    admin = request.app.state.service.settings.admin_key
    if admin is None or not admin.get_secret_value():
        return False
    return hmac.compare_digest(hash_key(key), hash_key(admin.get_secret_value()))


def _resolve(request: Request, key: str, via_cookie: bool) -> Principal | None:
    """Who ``key`` belongs to; None for nobody. A cookie can only hold a user token."""
    records = request.app.state.service.records
    if key.startswith(TOKEN_PREFIX):
        user = records.user_by_token_hash(hash_key(key))
        if user is None:
            return None
        return Principal(name=user.name, user_id=user.id, role=user.role, via_cookie=via_cookie)
    if via_cookie:
        return None
    if _is_admin_key(request, key):
        return Principal(name="admin", role="admin")
    station = records.station_by_key_hash(hash_key(key))
    if station is None:
        return None
    return Principal(name=station.name, station_id=station.id)


def _check_csrf(request: Request, key: str) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), csrf_for(key).encode()):
        raise HTTPException(
            403,
            f"missing or wrong {CSRF_HEADER} header: a request signed in by the session "
            f"cookie that changes something must send the {CSRF_COOKIE} cookie's value in it",
        )


def principal(request: Request) -> Principal:
    """Any valid caller (401 otherwise); cookie requests that change state need CSRF."""
    key, via_cookie = _credentials(request)
    who = _resolve(request, key, via_cookie)
    if who is None:
        if via_cookie:
            raise _unauthorized("the session has expired or was closed: log in again")
        raise _unauthorized("unknown API key (or an expired login token)")
    if via_cookie and request.method not in SAFE_METHODS:
        _check_csrf(request, key)
    return who


def station(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """A station's key (the admin key and users get 403: scans belong to stations)."""
    if who.is_station:
        return who
    if who.is_user:
        raise HTTPException(403, "scans are posted by stations: use a station's key")
    raise HTTPException(403, "the admin key cannot post scans; use a station's key")


def user(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """A user or the admin key: stations get 403 (the officers' side is not theirs)."""
    if who.is_station:
        raise HTTPException(403, "this endpoint is for officers' accounts, not stations")
    return who


def account(who: Annotated[Principal, Depends(user)]) -> Principal:
    """A person's account: the admin key gets 403 (what it would write is nobody's)."""
    if not who.is_user:
        raise HTTPException(
            403, "this needs a user account (the admin key is nobody's): log in as a user"
        )
    return who


def supervisor(who: Annotated[Principal, Depends(user)]) -> Principal:
    """A supervisor or admin (account or the admin key)."""
    if not who.has_role("supervisor"):
        raise HTTPException(403, f"this needs a supervisor or admin; {who.name} is {who.role}")
    return who


def supervisor_account(who: Annotated[Principal, Depends(account)]) -> Principal:
    """A supervisor's or admin's own account."""
    return supervisor(who)


def admin(request: Request) -> Principal:
    """The admin key or an admin's account (403 for stations and other users)."""
    key, via_cookie = _credentials(request)
    who = _resolve(request, key, via_cookie)
    if who is None:
        if not via_cookie and request.app.state.service.settings.admin_key is None:
            raise HTTPException(
                403,
                "no admin key is set on the server (CARGOSCAN_ADMIN_KEY): "
                "use an admin account's token",
            )
        if via_cookie:
            raise _unauthorized("the session has expired or was closed: log in again")
        raise _unauthorized("unknown API key (or an expired login token)")
    if via_cookie and request.method not in SAFE_METHODS:
        _check_csrf(request, key)
    if not who.is_admin:
        what = "a station's key" if who.is_station else f"{who.name} is {who.role}"
        raise HTTPException(403, f"this endpoint needs the admin key or an admin ({what})")
    return who


AnyCaller = Annotated[Principal, Depends(principal)]
StationCaller = Annotated[Principal, Depends(station)]
UserCaller = Annotated[Principal, Depends(user)]
AccountCaller = Annotated[Principal, Depends(account)]
SupervisorCaller = Annotated[Principal, Depends(supervisor)]
SupervisorAccount = Annotated[Principal, Depends(supervisor_account)]
AdminCaller = Annotated[Principal, Depends(admin)]
