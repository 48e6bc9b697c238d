"""Who may read and write.

Writes need `Authorization: Bearer <api.token>`. Reads are open on loopback unless
`read_requires_token`; otherwise they need the same header or a session. A session is what a
browser uses (the status page cannot send headers on its live feed): the token is sent once, in
the Authorization header of `POST /api/v1/session`, and the answer sets an HttpOnly,
SameSite=Strict cookie holding a random session id. Sessions allow reads only, lapse after
SESSION_IDLE without use and after SESSION_MAX in any case, and end when the token changes.
A token is never taken from a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from starlette.requests import HTTPConnection

SESSION_IDLE = 15 * 60.0  # seconds without use (a live feed uses it every second)
SESSION_MAX = 12 * 3600.0
MAX_SESSIONS = 64  # beyond, the least recently used session ends


class AuthError(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def expected_token(settings: Any) -> str | None:
    return settings.token.get_secret_value() if settings is not None and settings.token else None


def check_token(settings: Any, given: str | None) -> None:
    """Raises AuthError unless `given` is the configured token."""
    if given is None:
        raise AuthError(401, "a Bearer token is required", {"WWW-Authenticate": "Bearer"})
    expected = expected_token(settings)
    if expected is None or not hmac.compare_digest(_digest(given), _digest(expected)):
        raise AuthError(403, "the token is not valid")


def reads_need_auth(settings: Any) -> bool:
    return settings is not None and (settings.read_requires_token or not settings.loopback)


class Sessions:
    def __init__(self, port: int):
        self.cookie = f"edgegw_session_{port}"  # cookies are per host, not per port
        self._live: dict[str, tuple[float, float, bytes]] = {}  # id -> (created, last used, token digest)

    def __len__(self) -> int:
        return len(self._live)

    def open(self, token: str) -> str:
        now = time.monotonic()
        self._expire(now)
        while len(self._live) >= MAX_SESSIONS:
            oldest = min(self._live, key=lambda k: self._live[k][1])
            del self._live[oldest]
        sid = secrets.token_urlsafe(32)
        self._live[sid] = (now, now, _digest(token))
        return sid

    def close(self, sid: str | None) -> None:
        if sid:
            self._live.pop(sid, None)

    def valid(self, sid: str, token: str | None) -> bool:
        """Whether the session exists, has not lapsed and was opened with today's token; a valid
        session's idle time starts again."""
        now = time.monotonic()
        got = self._live.get(sid)
        if got is None:
            return False
        created, used, digest = got
        fresh = now - used < SESSION_IDLE and now - created < SESSION_MAX
        if not fresh or token is None or not hmac.compare_digest(digest, _digest(token)):
            del self._live[sid]
            return False
        self._live[sid] = (created, now, digest)
        return True

    def _expire(self, now: float) -> None:
        for sid, (created, used, _) in list(self._live.items()):
            if now - used >= SESSION_IDLE or now - created >= SESSION_MAX:
                del self._live[sid]

    def check_read(self, settings: Any, conn: HTTPConnection) -> None:
        """Raises AuthError unless the request may read."""
        if not reads_need_auth(settings):
            return
        given = bearer(conn)
        if given is not None:
            check_token(settings, given)
            return
        sid = conn.cookies.get(self.cookie)
        if sid:
            if self.valid(sid, expected_token(settings)):
                return
            raise AuthError(401, "the session has ended: sign in again", {"WWW-Authenticate": "Bearer"})
        if "access_token" in conn.query_params:
            raise AuthError(
                401,
                "a token in the URL is not accepted: send it in the Authorization header, "
                "or sign in (POST /api/v1/session) for a session",
                {"WWW-Authenticate": "Bearer"},
            )
        raise AuthError(401, "a Bearer token or a session is required", {"WWW-Authenticate": "Bearer"})
