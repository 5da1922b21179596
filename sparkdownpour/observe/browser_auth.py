"""How a browser gets into the dashboard without the bearer token ever reaching it.

The driver mints a one-time *login code* and logs a link ``<server>/login?code=<code>``.
Opening it exchanges the code (once) for a session cookie and redirects to ``/``, so the code
is gone from the address bar and the browser history after the first load. The cookie is a
separate random secret, not the run's bearer token: a browser can read the dashboard (GET
routes) but can never push updates, even if the cookie leaked. It is ``HttpOnly`` (no script
reads it) and ``SameSite=Strict`` (no other site's page makes the browser send it).
"""

from __future__ import annotations

import hmac
import secrets
import threading

__all__ = ["BrowserAuth", "LOGIN_PATH", "MAX_OPEN_CODES"]

LOGIN_PATH = "/login"
MAX_OPEN_CODES = 16  # unredeemed codes kept; minting more drops the oldest


class BrowserAuth:
    """One-time login codes and the session cookie they turn into (one per server)."""

    def __init__(self) -> None:
        # Cookies are per host, not per port: a per-server name keeps two servers on one
        # driver (two runs in a notebook) from overwriting each other's session.
        self.cookie_name = f"sdp_session_{secrets.token_hex(4)}"
        self._session = secrets.token_urlsafe(32)
        self._codes: list[str] = []
        self._lock = threading.Lock()

    def mint_code(self) -> str:
        """A fresh code, good for exactly one login."""
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes.append(code)
            del self._codes[:-MAX_OPEN_CODES]
        return code

    def redeem(self, code: str | None) -> bool:
        """True (and the code is spent) when ``code`` is an open one."""
        if not code or len(code) > 128:
            return False
        given = code.encode("utf-8", "surrogateescape")
        with self._lock:
            # Compare against every open code in constant time, so timing says nothing about
            # how close a guess was nor which code matched.
            matches = [hmac.compare_digest(given, c.encode()) for c in self._codes]
            if not any(matches):
                return False
            del self._codes[matches.index(True)]
            return True

    @property
    def session(self) -> str:
        return self._session

    def cookie_ok(self, value: str | None) -> bool:
        if not value:
            return False
        return hmac.compare_digest(value.encode("utf-8", "surrogateescape"),
                                   self._session.encode())

    def allows(self, method: str, path: str, cookies) -> bool:
        """A browser may read (GET) with the session cookie, or reach the login route, which
        checks its one-time code itself; it may never write."""
        if method not in ("GET", "HEAD"):
            return False
        return path == LOGIN_PATH or self.cookie_ok(cookies.get(self.cookie_name))
