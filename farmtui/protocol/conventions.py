"""What leaders, agents and clients agree on besides the messages themselves.

The protocol version every link's first message carries, the HTTP headers and
refusal a client recognises, and the paths of the sync root that only the
leader writes.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePath

from farmtui.protocol.limits import MAX_SECONDS

PROTOCOL_VERSION = 1
# Set on a leader's refusals when it is a standby (issue 14): a client with several
# leader URLs tries the next one. ``GET /healthz`` says the same in its body.
ROLE_HEADER = "X-Farm-Role"
# How a standby's one-line refusal begins (clients recognise it without the header).
STANDBY_REFUSAL = "this leader is a standby"

# An agent's exit status when the leader refused its token or its name (sysexits'
# EX_NOPERM): starting it again changes nothing, so its service unit does not.
AGENT_EXIT_REFUSED = 77

# The HTTP header of a submit's idempotency key: a retry with it finds the job it made.
IDEMPOTENCY_KEY = "Idempotency-Key"

# The file in the sync root that holds its id (``Welcome.root_id``; ``server.sync_root``).
ROOT_ID_FILE = ".farmtui-root"
# What only the leader writes in the sync root (first path parts, compared
# case-folded for case-insensitive file systems): the job logs, the node logs
# and the root's id. No upload and no job output may go there.
LEADER_PATHS = ("jobs", "nodes", ROOT_ID_FILE)


def leader_owned(relative: PurePath) -> bool:
    """Whether a path relative to the sync root is the root itself or the leader's own."""
    return not relative.parts or relative.parts[0].casefold() in LEADER_PATHS


# An operator's block of a node for a job lasts until lifted (a year, in the
# records); automatic blocks last ``block_for``, minutes to hours: a block with
# more than half a year to go is an operator's, and a retry does not lift it.
OPERATOR_BLOCK = MAX_SECONDS


def is_operator_block(until: float, now: float) -> bool:
    return until - now > OPERATOR_BLOCK / 2


def agent_tag(agent_id: str | None) -> str:
    """What logs name an agent by: a value derived from its id. Whoever presents the
    id itself in a hello takes the node's name over, so it never leaves the agent's
    state folder; the agent logs its tag at start, so the leader's word can be traced."""
    if not agent_id:
        return "no id"
    return "tag " + hashlib.sha256(b"farmtui-agent:" + agent_id.encode()).hexdigest()[:12]
