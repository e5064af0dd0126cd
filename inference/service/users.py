"""Accounts over HTTP: log in and out (bearer token and session cookie), and the admin's
management of users and stations.

A login hands out one random token, returned in the JSON body for API clients and set as
the ``cargoscan_session`` cookie (HttpOnly: page scripts cannot read it) for the page,
next to ``cargoscan_csrf`` (readable: the page echoes it as ``X-CSRF-Token``). Only the
token's SHA-256 is stored, with an expiry (``auth.TOKEN_TTL``); logout revokes it.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from inference.service.audit import actor_of
from inference.service.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    TOKEN_TTL,
    AdminCaller,
    AnyCaller,
    check_password,
    check_user_name,
    csrf_for,
    hash_key,
    hash_password,
    needs_rehash,
    new_key,
    new_token,
    principal,
    verify_password,
)
from inference.service.core import API
from inference.service.db import Station, User, iso, utcnow
from inference.service.deps import get_service
from inference.service.limits import HashingBusy
from inference.service.records import DuplicateName, StationRevoked
from inference.service.records.stations import MAX_GRACE_S

router = APIRouter(prefix=API)

Role = Literal["officer", "supervisor", "admin"]


# --------------------------------------------------------------------------- login


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


def _set_cookies(response: JSONResponse, request: Request, token: str) -> None:
    # Secure only over https: browsers drop Secure cookies on plain http (a local service).
    secure = request.url.scheme == "https"
    age = int(TOKEN_TTL.total_seconds())
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf_for(token),
        max_age=age,
        path="/",
        httponly=False,
        samesite="strict",
        secure=secure,
    )


def _clear_cookies(response: JSONResponse) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="strict")


@router.post("/auth/login", tags=["auth"])
async def login(request: Request, body: Login) -> JSONResponse:
    """A user's name and password -> a bearer token (and the page's session cookies).
    401 for a wrong name or password, said the same way for both; 429 with Retry-After
    after too many failures for the name from this address, or from this address at all
    (the attempt is counted before the password is checked, so concurrent guesses cannot
    run past the limit, and a refused one costs no Argon2 time), or while too many logins
    wait for a password check."""
    service = get_service(request)
    records = service.records
    address = request.client.host if request.client else "unknown"
    wait = service.login_limits.begin(body.username, address)
    if wait is not None:
        service.rate_limited.labels("login").inc()
        raise HTTPException(
            429,
            f"too many failed logins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    # A name no account can have (PostgreSQL would refuse the NUL) is just a wrong name.
    found = (
        await run_in_threadpool(records.user_by_name, body.username)
        if "\x00" not in body.username
        else None
    )
    stored = found.password_hash if found else None
    try:
        ok = await service.password_hashing.run(lambda: verify_password(stored, body.password))
    except HashingBusy as exc:
        service.login_limits.succeeded(body.username, address, begun=True)  # not tried
        service.rate_limited.labels("login").inc()
        retry = str(service.settings.retry_after_s)
        raise HTTPException(429, str(exc), headers={"Retry-After": retry}) from None
    if found is None or not ok or not found.active:
        await run_in_threadpool(_log_failed_login, records, body.username, found is not None)
        raise HTTPException(401, "wrong user name or password")
    service.login_limits.succeeded(body.username, address, begun=True)
    rehashed = None
    if needs_rehash(found.password_hash):  # rare: once per account and parameter change
        try:
            rehashed = await service.password_hashing.run(lambda: hash_password(body.password))
        except HashingBusy:
            rehashed = None  # next time
    return await run_in_threadpool(_open_session, request, found, rehashed)


def _open_session(request: Request, found: User, rehashed: str | None) -> JSONResponse:
    """The token of a login that succeeded (a worker thread: database writes)."""
    records = get_service(request).records
    if rehashed is not None:
        # Same password, stronger parameters: the user's other sessions stay open.
        records.update_user(found.name, password_hash=rehashed, keep_sessions=True)
    token = new_token()
    expires = utcnow() + TOKEN_TTL
    records.add_token(found.id, hash_key(token), expires)
    response = JSONResponse(
        {
            "token": token,
            "token_type": "bearer",
            "expires_at": expires.isoformat(),
            "user": {"name": found.name, "role": found.role},
        }
    )
    _set_cookies(response, request, token)
    return response


def _log_failed_login(records: Any, username: str, known: bool) -> None:
    """A refused login goes into the audit log (the name as typed, printable and short)."""
    name = "".join(c if c.isprintable() else "?" for c in username)[:100]
    records.audit_event("user.login_failed", "anonymous", name, {"known_user": known})


@router.post("/auth/logout", tags=["auth"])
def logout(request: Request) -> JSONResponse:
    """Revoke the token in use and clear the cookies. A dead session just gets its cookies
    cleared; a live cookie session needs the CSRF header like any change."""
    response = JSONResponse({"detail": "logged out"})
    try:
        who = principal(request)
    except HTTPException as exc:
        if exc.status_code != 401:
            raise
        _clear_cookies(response)
        return response
    if who.is_user:
        auth = request.headers.get("authorization")
        token = auth.partition(" ")[2].strip() if auth else request.cookies.get(SESSION_COOKIE)
        if token:
            get_service(request).records.revoke_token(hash_key(token))
    _clear_cookies(response)
    return response


@router.get("/auth/me", tags=["auth"])
def me(who: AnyCaller) -> dict[str, Any]:
    """Who the token, key or cookie belongs to: a user's role, "admin" for the admin key,
    "station" for a station."""
    return {"name": who.name, "role": "station" if who.is_station else who.role}


# --------------------------------------------------------------------------- admin: users


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    password: str = Field(min_length=1, max_length=1024)


class UserChange(BaseModel):
    role: Role | None = None
    password: str | None = Field(None, min_length=1, max_length=1024)
    active: bool | None = None


def user_json(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role,
        "active": user.active,
        "created_at": iso(user.created_at),
    }


def _valid_password(password: str) -> None:
    problem = check_password(password)
    if problem:
        raise HTTPException(422, f"password: {problem}")


@router.get("/admin/users", tags=["admin"])
def list_users(request: Request, _who: AdminCaller) -> dict[str, Any]:
    """Every account (never a password hash)."""
    return {"items": [user_json(u) for u in get_service(request).records.users()]}


@router.post("/admin/users", tags=["admin"], status_code=201)
def add_user(request: Request, _who: AdminCaller, body: NewUser) -> dict[str, Any]:
    """A new account; 409 if the name is taken."""
    problem = check_user_name(body.name)
    if problem:
        raise HTTPException(422, f"name: {problem}")
    _valid_password(body.password)
    try:
        user = get_service(request).records.add_user(
            body.name, body.role, hash_password(body.password), actor=actor_of(_who)
        )
    except DuplicateName as exc:
        raise HTTPException(409, str(exc)) from None
    return user_json(user)


@router.patch("/admin/users/{name}", tags=["admin"])
def change_user(request: Request, who: AdminCaller, name: str, body: UserChange) -> dict[str, Any]:
    """Change a role, set a password or (de)activate; a new password or deactivation ends
    the user's sessions. An admin cannot demote or deactivate their own account (no lock-out)."""
    if body.password is not None:
        _valid_password(body.password)
    if (
        who.is_user
        and name == who.name
        and ((body.role is not None and body.role != "admin") or body.active is False)
    ):
        raise HTTPException(409, "an admin cannot demote or deactivate their own account")
    user = get_service(request).records.update_user(
        name,
        role=body.role,
        password_hash=hash_password(body.password) if body.password is not None else None,
        active=body.active,
        actor=actor_of(who),
    )
    if user is None:
        raise HTTPException(404, f"no user {name[:100]!r}")
    return user_json(user)


# --------------------------------------------------------------------------- admin: stations


class NewStation(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")


class KeyRotation(BaseModel):
    grace_s: float = Field(
        0,
        ge=0,
        le=MAX_GRACE_S,
        description="seconds the current key stays valid beside the new one (0: none)",
    )


def station_json(station: Station) -> dict[str, Any]:
    """A station as the admin sees it (never a key or its hash)."""
    now = utcnow()
    grace = station.previous_key_expires_at
    return {
        "name": station.name,
        "created_at": iso(station.created_at),
        "revoked_at": iso(station.revoked_at),
        "old_key_valid_until": iso(grace) if grace is not None and grace > now else None,
    }


@router.get("/admin/stations", tags=["admin"])
def list_stations(request: Request, _who: AdminCaller) -> dict[str, Any]:
    """Every station (never a key), revoked ones with the time."""
    stations = get_service(request).records.stations()
    return {"items": [station_json(s) for s in stations]}


@router.post("/admin/stations/{name}/revoke", tags=["admin"])
def revoke_station(request: Request, who: AdminCaller, name: str) -> dict[str, Any]:
    """Refuse the station's keys from now on (its next request gets 401); its scans stay.
    404 for an unknown station, 409 if it was revoked before. Logged."""
    try:
        station = get_service(request).records.revoke_station(name, actor_of(who))
    except StationRevoked as exc:
        raise HTTPException(409, str(exc)) from None
    if station is None:
        raise HTTPException(404, f"no station {name[:100]!r}")
    return station_json(station)


@router.post("/admin/stations/{name}/rotate", tags=["admin"])
def rotate_station_key(
    request: Request, who: AdminCaller, name: str, body: KeyRotation
) -> dict[str, Any]:
    """A new key for the station, shown this once; the current key stays valid for
    ``grace_s`` seconds (time to install the new one), a key from before is refused. 404
    for an unknown station, 409 for a revoked one. Logged (never the key)."""
    key = new_key()
    try:
        station = get_service(request).records.rotate_station_key(
            name, hash_key(key), body.grace_s, actor_of(who)
        )
    except StationRevoked as exc:
        raise HTTPException(409, str(exc)) from None
    if station is None:
        raise HTTPException(404, f"no station {name[:100]!r}")
    return {**station_json(station), "key": key}


@router.post("/admin/stations", tags=["admin"], status_code=201)
def add_station(request: Request, _who: AdminCaller, body: NewStation) -> dict[str, Any]:
    """A new station and its API key, shown this once; 409 if the name is taken."""
    name = body.name.strip()
    if not name:
        raise HTTPException(422, "name: must not be blank")
    key = new_key()
    try:
        station = get_service(request).records.add_station(name, hash_key(key), actor_of(_who))
    except DuplicateName as exc:
        raise HTTPException(409, str(exc)) from None
    return {**station_json(station), "key": key}
