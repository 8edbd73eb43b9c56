"""While a leader that stepped down waits for its database, its port still answers.

A leader on PostgreSQL steps down when it cannot renew its lease, most often
because it cannot reach the database, and ``server.main.run_leader`` serves a
fresh standby on the same socket once the database answers again. Until then
the socket only listened: connections waited in its backlog unanswered, so a
CLI, console or agent given this leader's URL first waited for its own
timeout before it tried the next one, the active leader; and SIGTERM was
ignored until the database came back.

Meanwhile a stand-in answers on the port as a standby does (``server.app``):
``/healthz`` says standby with no active leader known, every other request
gets 503 with ``X-Farm-Role: standby``, agents and consoles are refused and
go to the next leader. It knows nothing of the farm and opens no store.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

from farmtui.protocol import STANDBY_REFUSAL
from server.errors import StoreError
from server.store import open_store

log = logging.getLogger("farmtui.leader")

# Between tries to open the store: doubling from the first to the longest.
FIRST_RETRY = 0.25
LONGEST_RETRY = 5.0


class StoreUnreachable:
    """What ``app.state.leader`` is while the store does not answer: the few answers
    a standby gives before it looks at the farm (``refusal``, ``role``, ``active_url``)."""

    role: Literal["standby"] = "standby"
    active_url: str | None = None

    def refusal(self) -> str:
        # Not the database's error: its host and user are nobody's business but the admin's,
        # and the leader's log has it.
        return f"{STANDBY_REFUSAL}; it cannot reach its database right now, try another leader"


def store_error(url: str) -> str | None:
    """Why the store at ``url`` does not open now; None: it does."""
    try:
        open_store(url).close()
    except StoreError as exc:
        return str(exc)
    return None


def next_retry(delay: float) -> float:
    """The wait after one of ``delay`` (0: none yet): doubling from the first to the longest."""
    return min(2 * delay or FIRST_RETRY, LONGEST_RETRY)


def wait_for_store(url: str, stop: threading.Event, first: float = 0.0) -> bool:
    """True once the store at ``url`` opens (tried after ``first`` seconds, then less and
    less often); False if ``stop`` is set first.

    Each distinct failure is logged once; the URL's password is not in them
    (``server.store_postgres`` says what failed without it).
    """
    delay, said = first, None
    while not stop.wait(delay):
        why = store_error(url)
        if why is None:
            return True
        if why != said:
            said = why
            log.error("waiting for the store before serving again: %s", why)
        delay = next_retry(delay)
    return False
