"""Who may do what: one table, consulted by the REST API and both WebSockets.

Each action (a row) lists the columns that may do it, with the condition a
cell carries. A principal falls in one column for one request:

- ``viewer``; ``user_own`` / ``user_others``: a user acting on a job it owns /
  one someone else owns (for ``submit``: as itself / for another owner);
  ``admin``;
- ``agent_shared``: the leader's shared ``agent.token`` (the token named
  ``agent``), which may be any node; ``agent_node``: a token made with
  ``farm token create --role agent --name NODE``, which may be only NODE.

``authorize`` is the one check; ``markdown_table`` renders the table the
README shows under "Who may do what", and a test compares the two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from farmtui.protocol import Role
from farmtui.protocol.limits import NODE_NAME_PATTERN
from server.errors import Forbidden

Who = Literal["viewer", "user_own", "user_others", "admin", "agent_shared", "agent_node"]
Action = Literal[
    "whoami",
    "read",
    "submit",
    "submit_urgent",
    "webhook_any",
    "job_action",
    "chunk_action",
    "patch",
    "block_node",
    "move",
    "set_priority",
    "set_node_enabled",
    "set_limit",
    "manage_tokens",
    "agent_link",
    "upload_output",
    "upload_any",
]

WHO: tuple[Who, ...] = get_args(Who)
ACTIONS: tuple[Action, ...] = get_args(Action)

# The README's column headings.
COLUMNS: dict[Who, str] = {
    "viewer": "viewer",
    "user_own": "user (own jobs)",
    "user_others": "user (others' jobs)",
    "admin": "admin",
    "agent_shared": "agent (shared)",
    "agent_node": "agent (per-node)",
}

# The name of the shared agent token (the leader writes it to <data>/agent.token).
# Reserved: no token can be created with it, so it marks the one token that may
# be any node.
SHARED_AGENT = "agent"

# Node names, and so the names of per-node agent tokens (``NODE_NAME_PATTERN``).
NODE_NAME = re.compile(NODE_NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the token's name and role."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def node(self) -> str | None:
        """The one node a per-node agent token may be; None for every other token."""
        if self.role == "agent" and self.name != SHARED_AGENT:
            return self.name
        return None


@dataclass(frozen=True, slots=True)
class Right:
    """One row: what it is, where it is reached, and who may (with the cell's condition)."""

    label: str
    where: str
    verb: str  # for "role viewer may not <verb>"
    allowed: dict[Who, str]
    # Why a user may not do it to someone else's job.
    own_only: str = "users control only their own jobs"


YES = ""  # allowed without a condition
_READERS: dict[Who, str] = {"viewer": YES, "user_own": YES, "user_others": YES, "admin": YES}
_OWNERS: dict[Who, str] = {"user_own": YES, "admin": YES}

RIGHTS: dict[Action, Right] = {
    "whoami": Right(
        "say whose token it is",
        "`GET /api/whoami`",
        "ask who it is",
        {
            "viewer": YES,
            "user_own": YES,
            "user_others": YES,
            "admin": YES,
            "agent_shared": YES,
            "agent_node": YES,
        },
    ),
    "read": Right(
        "read jobs, nodes and logs",
        "`GET /api/jobs[/{id}[/events, /logs]]`, `GET /api/nodes[/{name}/log]`, "
        "`GET /api/failures`, `GET /api/events`, `GET /api/pathmap`, `GET /api/limits`; "
        "`/ws/console`: open, "
        "`watch_job`, "
        "`fetch_task_output`, `fetch_node_log`, `show_archived`, `fetch_failures`, "
        "`fetch_events`",
        "read jobs, nodes or logs",
        _READERS,
    ),
    "submit": Right(
        "submit a job",
        "`POST /api/jobs`",
        "submit jobs",
        {
            "user_own": "priority `user_priority_min`-100, as itself",
            "admin": "for any owner (`owner`)",
        },
        own_only="users submit only as themselves",
    ),
    "submit_urgent": Right(
        "submit with a priority below `user_priority_min`",
        "`POST /api/jobs`",
        "submit below user_priority_min",
        {"admin": YES},
    ),
    "webhook_any": Right(
        "give a job a webhook outside `webhook_allow`",
        "`POST /api/jobs`, `PATCH /api/jobs/{id}`; console `patch_job`",
        "set webhooks outside webhook_allow",
        {"admin": YES},
    ),
    "job_action": Right(
        "act on jobs (pause, resume, requeue, cancel, archive, delete ...)",
        "`POST /api/jobs/actions`; console `job_action`",
        "control jobs",
        _OWNERS,
    ),
    "chunk_action": Right(
        "act on chunks",
        "`POST /api/jobs/{id}/chunks/actions`; console `chunk_action`",
        "control jobs",
        _OWNERS,
    ),
    "patch": Right(
        "change a job's settings",
        "`PATCH /api/jobs/{id}`; console `patch_job`",
        "control jobs",
        _OWNERS,
    ),
    "block_node": Right(
        "block or unblock a node for a job",
        "`POST /api/jobs/{id}/nodes/{name}/block`, `/unblock`; console `block_node`",
        "control jobs",
        _OWNERS,
    ),
    "move": Right(
        "move a job in the queue",
        "`POST /api/jobs/{id}/move`; console `move_job`",
        "control jobs",
        {"user_own": "passing only its own jobs", "admin": YES},
    ),
    "set_priority": Right(
        "change a job's priority",
        "`POST /api/jobs/{id}/priority`; console `set_priority`",
        "change priority",
        {"admin": YES},
    ),
    "set_node_enabled": Right(
        "enable or disable a node",
        "`POST /api/nodes/{name}/enable`, `/disable`; console `set_node_enabled`",
        "enable or disable nodes",
        {"admin": YES},
    ),
    "set_limit": Right(
        "define, change or remove a farm limit (licences)",
        "`PUT /api/limits/{name}`, `DELETE /api/limits/{name}`",
        "change limits",
        {"admin": YES},
    ),
    "manage_tokens": Right(
        "make, list or revoke tokens",
        "`POST /api/tokens`, `GET /api/tokens`, `DELETE /api/tokens/{id}`",
        "manage tokens",
        {"admin": YES},
    ),
    "agent_link": Right(
        "connect as a node",
        "`/ws/agent` hello",
        "run an agent",
        {
            "admin": "any name",
            "agent_shared": "any name no other agent holds",
            "agent_node": "its own name only",
        },
    ),
    "upload_output": Right(
        "upload a chunk attempt's output",
        "`PUT /api/files/{path}?job=&chunk=&attempt=`",
        "upload files",
        {
            "admin": YES,
            "agent_shared": "the output files of a current attempt",
            "agent_node": "the output files of its own current attempt",
        },
    ),
    "upload_any": Right(
        "upload any file into the sync root (not `jobs/`, `nodes/`, `.farmtui-root`)",
        "`PUT /api/files/{path}`",
        "upload files",
        {"admin": YES},
    ),
}


def column(principal: Principal, owner: str | None = None) -> Who:
    """The column ``principal`` falls in, acting on a job of ``owner`` (None: not a job)."""
    match principal.role:
        case "viewer":
            return "viewer"
        case "user":
            return "user_own" if owner is None or owner == principal.name else "user_others"
        case "admin":
            return "admin"
        case "agent":
            return "agent_shared" if principal.node is None else "agent_node"


def may(principal: Principal, action: Action, owner: str | None = None) -> bool:
    return column(principal, owner) in RIGHTS[action].allowed


def could(principal: Principal, action: Action) -> bool:
    """Whether ``principal`` may do ``action`` at least on some job (checked before the body)."""
    if principal.role == "user":
        columns: tuple[Who, ...] = ("user_own", "user_others")
    else:
        columns = (column(principal),)
    return any(who in RIGHTS[action].allowed for who in columns)


def refusal(
    principal: Principal, action: Action, owner: str | None = None, job_id: str | None = None
) -> str | None:
    """Why ``principal`` may not do ``action`` (on job ``job_id`` of ``owner``); None if it may."""
    if may(principal, action, owner):
        return None
    right = RIGHTS[action]
    if could(principal, action) and owner is not None:
        job = f"job {job_id} belongs" if job_id is not None else "the job would belong"
        return f"{job} to {owner}; {right.own_only}"
    if set(right.allowed) <= {"admin"}:
        return f"only admins may {right.verb}"
    if principal.role != "agent":
        who = f"role {principal.role}"
    elif principal.node is None:
        who = "the shared agent token"
    else:
        who = f"the agent token of node {principal.node}"
    return f"{who} may not {right.verb}"


def authorize(
    principal: Principal, action: Action, owner: str | None = None, job_id: str | None = None
) -> None:
    """Forbidden (403) unless the table lets ``principal`` do ``action`` (on ``owner``'s job)."""
    why = refusal(principal, action, owner, job_id)
    if why is not None:
        raise Forbidden(why)


def node_refusal(principal: Principal, name: str) -> str | None:
    """Why ``principal`` may not connect as node ``name``: a per-node token is only its node."""
    if principal.node is not None and principal.node != name:
        return f"this agent token is for node {principal.node}; it may not connect as {name}"
    return None


def cell(action: Action, who: Who) -> str:
    """One cell of the README table: ``yes``, ``yes: <condition>`` or ``no``."""
    allowed = RIGHTS[action].allowed
    if who not in allowed:
        return "no"
    return f"yes: {allowed[who]}" if allowed[who] else "yes"


def markdown_table() -> str:
    """The README's "Who may do what" table, made from ``RIGHTS``."""
    header = ["action", "where", *COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for action, right in RIGHTS.items():
        cells = [right.label, right.where, *(cell(action, who) for who in WHO)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
