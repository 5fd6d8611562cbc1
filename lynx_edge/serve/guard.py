"""Who may talk to the server: the ``Host`` and ``Origin`` checks that keep web pages out.

A server on loopback is reachable from every web page the user opens: a page can point a domain
it controls at 127.0.0.1 (DNS rebinding) and drive the local model same-origin, with no CORS
check in the way, or POST a "simple" request cross-origin without a preflight. So, as Ollama
does and the MCP specification requires of local HTTP servers:

* ``Host`` must name the server: bound to a loopback address, a loopback name (``localhost``,
  ``*.localhost``, a 127.x.x.x address, ``[::1]``, any port) or one given with
  ``--allowed-host``; bound to another address, those names, the bind address and the
  ``--allowed-host`` ones. ``--allowed-host '*'`` turns the check off.
* ``Origin``, when a browser sends one, must be a local origin (a loopback host, any scheme and
  port) or a ``--cors-origin``.

Anything else is 403 in the door's own error shape, on every route; each foreign host is
logged once.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("lynx_edge.serve")
ANY_HOST = "*"


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port, lower-case ("[::1]:8080" → "::1")."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    name, _, _ = value.partition(":")
    return name.rstrip(".")


def is_loopback(name: str) -> bool:
    """``localhost``, ``*.localhost``, or a loopback IP literal (127.0.0.0/8, ::1)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """The host names and browser origins a server bound to ``bind`` accepts."""

    def __init__(self, bind: str, allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()) -> None:
        allowed = [h.strip().lower() for h in allowed_hosts if h.strip()]
        self.off = ANY_HOST in allowed
        self.names = {host_name(h) for h in allowed if h != ANY_HOST}
        bind_name = host_name(bind)
        if not is_loopback(bind_name) and bind_name not in ("0.0.0.0", "::", ""):
            self.names.add(bind_name)
        self.cors_origins = {o.rstrip("/").lower() for o in cors_origins}

    def host_ok(self, header: str | None) -> bool:
        if self.off:
            return True
        name = host_name(header or "")
        return bool(name) and (is_loopback(name) or name in self.names)

    def origin_ok(self, origin: str | None) -> bool:
        """No Origin (not a browser), a local origin, or a configured CORS origin."""
        if origin is None or self.off:
            return True
        if origin.rstrip("/").lower() in self.cors_origins:
            return True
        try:
            host = urlsplit(origin).hostname or ""
        except ValueError:
            return False
        return is_loopback(host.lower())


class HostGuardMiddleware:
    """403 for a foreign ``Host`` or ``Origin`` (plain ASGI, outermost, so even a CORS preflight
    or a "simple" request from a foreign page stops here)."""

    def __init__(self, app: Any, policy: HostPolicy, refuse: Callable[[str, str], Any]) -> None:
        self.app = app
        self.policy = policy
        self.refuse = refuse  # (path, message) → an ASGI response in the door's error shape
        self.logged: set[str] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            host, origin = headers.get("host"), headers.get("origin")
            message = None
            if not self.policy.host_ok(host):
                message = (
                    f"host {host or '(none)'!r} is not served here: this server answers requests for its own "
                    "address only (start it with --allowed-host NAME to add one)"
                )
                self._log_once(f"host {host!r}")
            elif not self.policy.origin_ok(origin):
                message = (
                    f"origin {origin!r} may not call this server: only local pages may "
                    "(start it with --cors-origin ORIGIN to allow one)"
                )
                self._log_once(f"origin {origin!r}")
            if message:
                await self.refuse(scope["path"], message)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _log_once(self, what: str) -> None:
        if what not in self.logged:
            self.logged.add(what)
            log.warning("refused requests from %s (DNS rebinding or a foreign page?)", what)
