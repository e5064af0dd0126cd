"""User accounts and their login tokens (only the tokens' SHA-256 is stored).

A user's creation and every change log the account's whole new state
(``facts.user_fact_of``; the password hash as its SHA-256), a login and a logout the
SHA-256 of the session token's hash: ``cargoscan audit verify`` holds the rows against
them, so a role raised or a session slipped in behind the service's back is named."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from inference.service import audit
from inference.service.db import User, UserToken, utcnow
from inference.service.facts import secret_sha256, user_fact_of
from inference.service.records.base import DuplicateName, Repository


class UserRecords(Repository):
    """Accounts and login tokens; a password change or deactivation ends the sessions."""

    def add_user(self, name: str, role: str, password_hash: str, actor: str = "cli") -> User:
        try:
            with self.session() as s:
                user = User(name=name, role=role, password_hash=password_hash, active=True)
                s.add(user)
                s.flush()
                audit.append(
                    s,
                    "user.created",
                    actor,
                    name,
                    {"user_id": user.id, "role": role, "row": user_fact_of(user)},
                )
                return user
        except IntegrityError:
            raise DuplicateName(f"a user named {name!r} exists already") from None

    def users(self) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.name)))

    def user_by_name(self, name: str) -> User | None:
        with self.session() as s:
            return s.scalars(select(User).where(User.name == name)).first()

    def update_user(
        self,
        name: str,
        *,
        role: str | None = None,
        password_hash: str | None = None,
        active: bool | None = None,
        keep_sessions: bool = False,
        actor: str = "service",
    ) -> User | None:
        """Change a user; a new password or deactivation revokes every token of theirs
        (``keep_sessions``: not for a mere re-hash of the same password)."""
        with self.session() as s:
            user = s.scalars(select(User).where(User.name == name)).first()
            if user is None:
                return None
            change: dict[str, Any] = {"user_id": user.id}
            if role is not None and role != user.role:
                change["role"] = {"from": user.role, "to": role}
            if active is not None and active != user.active:
                change["active"] = active
            if password_hash is not None:
                change["password"] = "rehashed" if keep_sessions else "changed"
            if role is not None:
                user.role = role
            if password_hash is not None:
                user.password_hash = password_hash
            if active is not None:
                user.active = active
            if len(change) > 1:
                s.flush()
                audit.append(s, "user.changed", actor, name, {**change, "row": user_fact_of(user)})
            if (password_hash is not None and not keep_sessions) or active is False:
                s.execute(
                    update(UserToken)
                    .where(UserToken.user_id == user.id, UserToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
            return user

    def add_token(self, user_id: int, token_hash: str, expires_at: datetime) -> None:
        """Store a login; expired tokens are dropped on the way (they can never work again)."""
        now = utcnow()
        with self.session() as s:
            s.execute(delete(UserToken).where(UserToken.expires_at < now))
            s.add(UserToken(user_id=user_id, token_hash=token_hash, expires_at=expires_at))
            user = s.get(User, user_id)
            name = user.name if user is not None else f"#{user_id}"
            audit.append(
                s,
                "user.login",
                f"user:{name}",
                name,
                {
                    "user_id": user_id,
                    "expires_at": expires_at.isoformat(),
                    "token_sha256": secret_sha256(token_hash),
                },
            )

    def user_by_token_hash(self, token_hash: str) -> User | None:
        """The active user of an unexpired, unrevoked token."""
        with self.session() as s:
            q = (
                select(User)
                .join(UserToken, UserToken.user_id == User.id)
                .where(
                    UserToken.token_hash == token_hash,
                    UserToken.revoked_at.is_(None),
                    UserToken.expires_at > utcnow(),
                    User.active.is_(True),
                )
            )
            return s.scalars(q).first()

    def revoke_token(self, token_hash: str) -> None:
        with self.session() as s:
            done = s.execute(
                update(UserToken)
                .where(UserToken.token_hash == token_hash, UserToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
                .returning(UserToken.user_id)
            ).first()
            if done is not None:
                user = s.get(User, done.user_id)
                name = user.name if user is not None else f"#{done.user_id}"
                audit.append(
                    s,
                    "user.logout",
                    f"user:{name}",
                    name,
                    {"user_id": done.user_id, "token_sha256": secret_sha256(token_hash)},
                )
