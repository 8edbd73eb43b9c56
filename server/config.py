"""The leader's settings: ``<data>/leader.toml`` plus where it keeps things.

``LeaderConfig`` is the file (unknown keys are errors, so a typo never passes
silently); ``LeaderSettings`` is everything ``create_app`` needs, including
the clock, which tests may replace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from farmtui.config import DEFAULT_PORT
from server.errors import ConfigError
from server.path_mapping import PathMapError, check_rules
from server.scheduler import SchedulerConfig
from server.webhooks import parse_webhook

CONFIG_FILE = "leader.toml"
# Below this, the margin between an agent's lease and node_timeout is shorter
# than a supervisor's kill of a renderer tree (SIGTERM, 0.2 s, SIGKILL) and
# the leader's own dispatch: 0.6 s of margin at 1.5 s.
MIN_NODE_TIMEOUT = 1.5


class LeaderConfig(SchedulerConfig, kw_only=True, forbid_unknown_fields=True):
    """The contents of ``leader.toml``: the scheduler's rules, then the leader's own.

    Durations are seconds.
    """

    # Links.
    heartbeat_interval: float = 2.0
    # Notifications go here (and to each job's own webhook).
    webhook: str | None = None
    webhook_timeout: float = 5.0
    # URL prefixes a non-admin's job webhook must start with (scheme, host and
    # port exactly, the path at a "/" boundary). Empty: only admins set job webhooks.
    webhook_allow: list[str] = msgspec.field(default_factory=list)
    # Users (not admins) submit with at least this priority number: lower,
    # which renders sooner, needs an admin.
    user_priority_min: int = 50
    # Limits.
    max_request_bytes: int = 1024 * 1024
    max_upload_bytes: int = 16 * 1024**3
    # "normal": a commit survives a leader crash, the last few may be lost on a
    # power cut (WAL keeps the database consistent). "full": fsync every commit.
    synchronous: Literal["normal", "full"] = "normal"
    # SQLite: below this much free space on the data folder's disk (or 5% of a small
    # disk) the leader refuses every change but deleting jobs (server.disk_room). 0: never.
    disk_reserve_mb: float = 64.0
    # How often the leader checks for lost nodes, expired blocks and retries.
    tick_interval: float = 1.0
    # At most this many live updates per second per console.
    console_updates_per_second: float = 20.0
    # A token for ``GET /metrics`` only (Prometheus's ``authorization`` or
    # ``bearer_token_file``), so a scraper needs no user's token. None: a
    # viewer, user or admin token is needed.
    metrics_token: str | None = None
    # Where the farm is kept: sqlite:PATH (default <data>/farm.db) or postgresql://...
    # (``--store`` wins). Keep a PostgreSQL password in ~/.pgpass or PGPASSWORD.
    store: str | None = None
    # PostgreSQL only (server.lease): the active leader's lease in the database, and how
    # often it renews it (a standby looks as often). A standby takes over a dead
    # leader's farm at most leader_lease + lease_renew_interval after its last renewal.
    leader_lease: float = 3.0
    lease_renew_interval: float = 0.5


def read_config(data: Path) -> LeaderConfig:
    """``<data>/leader.toml``, or the defaults when there is none."""
    path = data / CONFIG_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return LeaderConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        config = msgspec.toml.decode(raw, type=LeaderConfig)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    check_config(config, path)
    return config


def check_config(config: LeaderConfig, where: Path | str = CONFIG_FILE) -> None:
    positive = {
        "retry_delay": config.retry_delay,
        "retry_cap": config.retry_cap,
        "node_timeout": config.node_timeout,
        "heartbeat_interval": config.heartbeat_interval,
        "webhook_timeout": config.webhook_timeout,
        "tick_interval": config.tick_interval,
        "console_updates_per_second": config.console_updates_per_second,
        "max_request_bytes": config.max_request_bytes,
        "max_upload_bytes": config.max_upload_bytes,
        "leader_lease": config.leader_lease,
        "lease_renew_interval": config.lease_renew_interval,
    }
    for key, value in positive.items():
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}: {key} must be a positive number, not {value}")
    if config.node_timeout < MIN_NODE_TIMEOUT:
        raise ConfigError(
            f"{where}: node_timeout must be at least {MIN_NODE_TIMEOUT:g} s, not "
            f"{config.node_timeout:g}: a silent node's supervisors need the time between "
            "its lease (0.6 x node_timeout) and node_timeout to kill its renderers"
        )
    if config.heartbeat_interval > config.agent_lease / 3:
        raise ConfigError(
            f"{where}: heartbeat_interval must be at most {config.agent_lease / 3:g} s "
            "(a third of the agents' lease, 0.6 x node_timeout), not "
            f"{config.heartbeat_interval:g}: a late heartbeat or two must not cost a lease"
        )
    if config.lease_renew_interval > config.leader_lease / 3:
        raise ConfigError(
            f"{where}: lease_renew_interval must be at most {config.leader_lease / 3:g} s "
            f"(a third of leader_lease), not {config.lease_renew_interval:g}: a late renewal "
            "or two must not depose a healthy leader"
        )
    if not math.isfinite(config.disk_reserve_mb) or config.disk_reserve_mb < 0:
        raise ConfigError(
            f"{where}: disk_reserve_mb must be 0 or more, not {config.disk_reserve_mb}"
        )
    if not 0 <= config.user_priority_min <= 100:
        raise ConfigError(
            f"{where}: user_priority_min must be 0-100, not {config.user_priority_min}"
        )
    if config.metrics_token is not None:
        check_metrics_token(config.metrics_token, where)
    if config.retries < 0:
        raise ConfigError(f"{where}: retries must be 0 or more, not {config.retries}")
    if config.webhook is not None:
        try:
            parse_webhook(config.webhook)
        except ValueError as exc:
            raise ConfigError(f"{where}: webhook {exc}") from None
    for prefix in config.webhook_allow:
        try:
            parse_webhook(prefix)
        except ValueError as exc:
            raise ConfigError(f"{where}: webhook_allow entry {prefix!r} {exc}") from None
        if any(mark in prefix for mark in ("?", "#", "@")):
            raise ConfigError(
                f"{where}: webhook_allow entry {prefix!r} must be scheme://host[:port]"
                "[/path], without a query, fragment or user name"
            )
    # ``[[path_map]]`` (the rules are fields of SchedulerConfig: the scheduler maps).
    try:
        check_rules(config.path_map)
    except PathMapError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# A metrics token is a password a scraper sends: long enough not to be guessed.
MIN_METRICS_TOKEN = 16


def check_metrics_token(token: str, where: Path | str = CONFIG_FILE) -> None:
    """ConfigError (never repeating the token) unless it is a usable bearer token."""
    if len(token) < MIN_METRICS_TOKEN:
        raise ConfigError(
            f"{where}: metrics_token must be at least {MIN_METRICS_TOKEN} characters "
            "(e.g. the output of `openssl rand -hex 16`)"
        )
    if not token.isascii() or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(
            f"{where}: metrics_token must be printable ASCII without spaces (it is sent "
            "in an HTTP header)"
        )


@dataclass(slots=True)
class LeaderSettings:
    """Everything the leader app needs to start."""

    data: Path
    root: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    config: LeaderConfig = field(default_factory=LeaderConfig)
    clock: Callable[[], float] = time.time
    # The leader has the process to itself (``farm leader``, not a test): it may
    # tune the garbage collector for a long-lived heap (see ``Leader.start``).
    own_process: bool = False
    # ``farm leader --store URL``; None: leader.toml's ``store``, else <data>/farm.db.
    store: str | None = None
    # ``farm leader --advertise URL``: how clients and the other leaders reach this one;
    # None: http(s)://host:port.
    advertise: str | None = None
    # Called when this leader steps down (its lease is lost): ``server.main`` then
    # stops serving and starts again as a standby. None: it stays a refusing standby.
    on_step_down: Callable[[], None] | None = None
    # Called with what stopped the app's start-up (``server.main``: a store that fails
    # again is waited for, anything else ends the leader).
    on_start_failed: Callable[[BaseException], None] | None = None

    @classmethod
    def from_data(
        cls,
        data: Path,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 7878,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        store: str | None = None,
        advertise: str | None = None,
    ) -> LeaderSettings:
        """Settings with ``leader.toml`` read from the data folder."""
        return cls(
            data=data,
            root=root,
            host=host,
            port=port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            config=read_config(data),
            store=store,
            advertise=advertise,
        )

    @property
    def database(self) -> Path:
        return self.data / "farm.db"

    @property
    def advertised(self) -> str:
        """This leader's URL as others should use it: ``--advertise``, else http(s)://host:port."""
        if self.advertise:
            return self.advertise.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def store_url(self) -> str:
        """The store to open (``server.store.open_store``): flag, then leader.toml, then SQLite."""
        return self.store or self.config.store or f"sqlite:{self.database}"
