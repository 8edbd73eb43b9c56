"""The client's HTTP: one kept-alive connection to a leader, with a deadline and TLS.

The standard library's ``http.client``, not httpx: every ``farm`` command
imports this module, and importing httpx (which brings click, rich and
pygments) and building its connection pool cost more than the rest of a short
command's run. ``FarmClient`` (``farmtui.client``) sends its requests through
a ``Transport``; this is the real one. The console's link uses the same TLS
settings (``ssl_context``) and words for an untrusted certificate.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import selectors
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from typing import TypeAlias
from urllib.parse import urlsplit

from farmtui import errors

Transport: TypeAlias = Callable[[str, str, dict[str, str], bytes | None], tuple[int, str, bytes]]
"""Sends one request and returns its answer; FarmClient's is a kept connection to the leader.

Called with the method, the path with its query, the headers and the body; returns
the status, the reason phrase and the body. When the leader cannot be reached it
raises one of ``TRANSPORT_ERRORS``: ``ConnectionRefusedError``, ``socket.gaierror``
(unknown host), ``TimeoutError``, ``http.client.RemoteDisconnected`` ... Tests pass
a fake leader instead.
"""
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)

# Methods whose request may be sent again when a kept connection turns out to
# be closed under it: the leader may have done it once already (RFC 9110 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# A whole exchange (request and answer) may last this many times the client's timeout.
EXCHANGE_TIMEOUTS = 4


class Connection:
    """The client's one kept-alive connection to the leader: its ``Transport``.

    Opened by the first request, and opened again by the next one after a
    failure or after the leader closed it while idle (uvicorn closes idle
    connections after a few seconds): that close is no reason to fail.
    """

    def __init__(self, leader: str, timeout: float, verify: bool | str) -> None:
        url = urlsplit(leader)
        host = url.netloc.rpartition("@")[2]  # host[:port], without any user:password@
        self._http: http.client.HTTPConnection
        if url.scheme == "https":
            context = ssl_context(verify)
            self._http = http.client.HTTPSConnection(host, timeout=timeout, context=context)
        elif url.scheme == "http":
            # No SSL context: loading the CA bundle costs 0.2 s, most of a short command.
            self._http = http.client.HTTPConnection(host, timeout=timeout)
        else:
            raise errors.ConfigError(
                f"the leader URL {leader!r} must start with http:// or https://"
            )
        # FarmClient may be shared by threads; one connection carries one exchange at a time.
        self._lock = threading.Lock()
        self._timeout = timeout

    def __call__(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str, bytes]:
        with self._lock:
            kept = self._http.sock is not None
            if kept and _readable(self._http.sock):
                # An idle connection has nothing to read unless the leader closed it.
                self._http.close()
                kept = False
            try:
                return self._exchange(method, target, headers, body)
            except (ConnectionError, ssl.SSLEOFError):
                # The leader may have closed the kept connection just as the request
                # left; only a request that is safe to repeat gets a new connection.
                if not (kept and method in IDEMPOTENT_METHODS):
                    raise
            return self._exchange(method, target, headers, body)

    def _exchange(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str, bytes]:
        # ``timeout`` bounds each wait on the socket; a leader (or something posing
        # as one) that sends a byte now and then would hold a command for ever, so
        # the whole exchange has a deadline too: past it the socket is shut.
        expired = threading.Event()
        deadline = threading.Timer(EXCHANGE_TIMEOUTS * self._timeout, self._expire, [expired])
        deadline.daemon = True
        deadline.start()
        try:
            self._http.request(method, target, body=body, headers=headers)
            answer = self._http.getresponse()
            status, reason, content = answer.status, answer.reason, answer.read()
            if expired.is_set():  # the shut socket may read as the answer's end
                raise TimeoutError("no whole answer in time")
            return status, reason, content
        except BaseException as exc:
            # A half-done exchange leaves the connection unusable: the next one reconnects.
            self._http.close()
            if expired.is_set() and isinstance(exc, TRANSPORT_ERRORS):
                raise TimeoutError("no whole answer in time") from None
            raise
        finally:
            deadline.cancel()

    def _expire(self, expired: threading.Event) -> None:
        expired.set()
        sock = self._http.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._http.close()


def _readable(sock: socket.socket) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout=0))


def untrusted_certificate(exc: ssl.SSLCertVerificationError, verify: bool | str) -> str:
    """Why the leader's certificate was refused and what to do, in one line.

    ``verify``: a CA file's path when one was given, else True (the system's CAs).
    """
    # OpenSSL's code and its words: "CERTIFICATE_VERIFY_FAILED: self-signed certificate".
    why = ": ".join(str(part) for part in (exc.reason, exc.verify_message) if part)
    if isinstance(verify, str):
        return (
            f"its TLS certificate is not trusted ({why}): the CA file {verify} did not "
            "sign it; give the CA that did"
        )
    return (
        f"its TLS certificate is not trusted ({why}); if a private CA signed it, "
        "give that CA's PEM file with --ca FILE, FARM_CA or ca in the config file"
    )


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The system's CAs (True), a CA file (its path), or no certificate checks (False)."""
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True:
        return ssl.create_default_context()
    try:
        if not stat.S_ISREG(os.stat(verify).st_mode):  # a FIFO would block the load for ever
            raise errors.ConfigError(f"the CA file {verify} is not a regular file")
        return ssl.create_default_context(cafile=verify)
    except ssl.SSLError as exc:  # before OSError: it is one
        raise errors.ConfigError(
            f"the CA file {verify} holds no usable PEM certificate ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise errors.ConfigError(
            f"cannot read the CA file {verify}: {exc.strerror or exc}"
        ) from None
