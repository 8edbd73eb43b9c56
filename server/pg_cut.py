"""Cut a PostgreSQL connection's link from any thread: every wait on it ends at once.

libpq waits on its socket with no time limit, and a server that is frozen
(SIGSTOP, a paused VM) or a link that drops packets without a reset never
ends that wait. Shutting the socket down from another thread ends it with
an error; the next call opens a new connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

import psycopg


def shut_down(conn: psycopg.BaseConnection[Any]) -> None:
    """End every wait on ``conn``'s socket at once, with an error; from any thread.

    An error, not a cancellation: psycopg answers a wait cancelled mid-query by
    asking the server to cancel it, which a frozen server holds for 10 s.
    """
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:
        return  # already closed
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as link:
        link.shutdown(socket.SHUT_RDWR)
