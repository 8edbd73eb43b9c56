"""Tokens: who a request comes from.

A token is a random secret; the store keeps only its SHA-256. Each token has
a name (the owner of the jobs submitted with it) and a role: ``viewer``,
``user``, ``admin`` or ``agent``. What each may do is the table in
``server.rights`` (the README's "Who may do what"); ``authenticate`` checks
the token and that its role may do the action at all, and
``rights.authorize`` checks the rest (whose job, which node).

An agent token named for a node (``farm token create --role agent --name
node7``) may be only that node. The leader's own ``agent.token`` is named
``agent`` (``rights.SHARED_AGENT``, a name no created token may take) and may
be any node.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import get_args

from starlette.datastructures import Headers, QueryParams

from farmtui.protocol import USER_NAME_PATTERN, Role
from server.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized, shown
from server.rights import NODE_NAME, SHARED_AGENT, Action, Principal, could, refusal
from server.store import FarmStore

__all__ = ["Principal", "Tokens", "authenticate", "bearer_token", "check_name"]

ROLES: tuple[str, ...] = get_args(Role)

_NAME = re.compile(USER_NAME_PATTERN)  # the same rule as a job's owner


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A token's id, what ``farm token list`` shows and ``farm token revoke`` takes: the first
# digits of its hash, which tell nothing of the secret.
TOKEN_ID_DIGITS = 12


def token_id(token_hash: str) -> str:
    return token_hash[:TOKEN_ID_DIGITS]


def new_token() -> str:
    """A random secret that never starts with '-' (``--token -x...`` would read as a flag)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def check_name(name: str, role: str = "user") -> str:
    """A name a new token may have; an agent token's name is the one node it may be."""
    if role == "agent":
        if not NODE_NAME.fullmatch(name):
            raise BadRequest(
                f"an agent token is named for its node: {shown(name)} must be 1-64 letters, "
                "digits, '.', '_' or '-'"
            )
    elif not _NAME.fullmatch(name):
        raise BadRequest(
            f"token name {shown(name)} must be 1-64 letters, digits, '.', '_', '@' or '-'"
        )
    if name == SHARED_AGENT:
        raise BadRequest(
            f"the token name {SHARED_AGENT!r} is reserved for the leader's shared agent.token"
        )
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise BadRequest(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


class Tokens:
    """Every token the leader accepts, by hash, kept in memory and in the store."""

    def __init__(self, store: FarmStore) -> None:
        self.store = store
        self.by_hash: dict[str, Principal] = {
            row.hash: Principal(row.name, check_role(row.role)) for row in store.tokens()
        }

    def create(self, role: str, name: str) -> str:
        """A new token for ``name`` with ``role``, stored; only its hash is kept."""
        token, principal = self.new(role, name)
        self.add(token, principal)
        return token

    def new(self, role: str, name: str) -> tuple[str, Principal]:
        """A new token for ``name`` with ``role``, not stored yet (``add``).

        What a token may touch goes by its name (a user's own jobs), so a name has
        one role: a user token named ``admin`` owned every job the admin submitted.
        Another token of the same name and role is allowed (a new one before the old
        is revoked).
        """
        principal = Principal(check_name(name, role), check_role(role))
        held = {p.role for p in self.by_hash.values() if p.name == principal.name}
        if held and principal.role not in held:
            raise Conflict(
                f"the name {name!r} is taken by a token of role {' and '.join(sorted(held))}: "
                "jobs belong to a name, so each name has one role"
            )
        return new_token(), principal

    def add(self, token: str, principal: Principal) -> None:
        token_hash = hash_token(token)
        self.store.add_token(token_hash, principal.name, principal.role)
        self.by_hash[token_hash] = principal

    def find(self, wanted: str) -> str:
        """The hash of the one token whose id is ``wanted``; NotFound or Conflict."""
        found = [h for h in self.by_hash if token_id(h) == wanted.lower()]
        if not found:
            raise NotFound(f"no token with the id {shown(wanted)} (farm token list)")
        if len(found) > 1:  # 48 bits: never seen, but never guessed either
            raise Conflict(f"several tokens have the id {shown(wanted)}")
        return found[0]

    def forget(self, token_hash: str) -> Principal:
        """No longer accept a token (the store's row is removed first: ``remove_token``)."""
        return self.by_hash.pop(token_hash)

    def lookup(self, token: str | None) -> Principal | None:
        if not token:
            return None
        return self.by_hash.get(hash_token(token))

    def ensure_file(self, path: Path, principal: Principal, remember: bool = True) -> str:
        """The token in ``path``, made (mode 0600) on first start and known to the store.

        ``remember=False`` (a standby, which must not write to a farm it does not
        run) makes the file only; the store learns the token once it is active.
        """
        if path.exists():
            token = path.read_text().strip()
            if token and remember and self.lookup(token) is None:
                # The database was reset but the file kept: keep the file working.
                self.add(token, principal)
            if token:
                return token
        token = new_token()
        if remember:
            self.add(token, principal)
        write_secret(path, token + "\n")
        return token


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read, created with that mode (no window where it is 0644)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def bearer_token(headers: Headers, query: QueryParams | None = None) -> str | None:
    """The token from ``Authorization: Bearer``, or ``?token=`` where headers cannot be set."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if query is not None:
        return query.get("token") or None
    return None


def authenticate(tokens: Tokens, token: str | None, action: Action) -> Principal:
    """The principal for ``token`` if its role may do ``action`` for some job; 401 or 403.

    Whose job it is, and which node, is checked later with ``rights.authorize``.
    """
    if not token:
        raise Unauthorized("missing token: send Authorization: Bearer <token>")
    principal = tokens.lookup(token)
    if principal is None:
        raise Unauthorized("unknown or revoked token")
    if not could(principal, action):
        raise Forbidden(refusal(principal, action) or f"role {principal.role} may not do this")
    return principal
