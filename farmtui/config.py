"""Where a command finds the leader's URL, its token, and the CA that signed its certificate.

Each is looked up on its own, first found wins:

1. the command's flags: ``--leader URL``, ``--token T`` or ``--token-file F``,
   ``--ca FILE``;
2. the environment: ``FARM_LEADER``, ``FARM_TOKEN`` (or ``FARM_TOKEN_FILE``),
   ``FARM_CA``;
3. the user config that ``farm up`` writes,
   ``$XDG_CONFIG_HOME/farmtui/config.toml`` (``~/.config/...`` by default)::

       leader = "https://farm.studio.lan:7878"
       token_file = "/home/me/farm-data/admin.token"
       ca = "/etc/farmtui/studio-ca.pem"

The config file names a token *file* (mode 0600) rather than holding the
token, so the secret stays in one place the leader wrote. ``ca`` is a PEM file
of the certificate authority a leader with a private CA (``https://``) is
checked against, instead of the system's; without one, the system's CAs (and
``SSL_CERT_FILE``) are used.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from farmtui.errors import ConfigError

DEFAULT_PORT = 7878
# The environment variable that holds a token: a secret, so an agent never hands it on to
# the renderers it starts (``agent.supervisor``).
TOKEN_VARIABLE = "FARM_TOKEN"


@dataclass(frozen=True, slots=True)
class Connection:
    """A leader URL and the token to show it, with where each came from."""

    leader: str
    token: str
    leader_source: str
    token_source: str
    # A CA file (PEM) to check an https:// leader's certificate with; None: the system's.
    ca: str | None = None


@dataclass(frozen=True, slots=True)
class UserConfig:
    """The contents of the user config file (either field may be missing)."""

    leader: str | None = None
    token_file: Path | None = None
    ca: Path | None = None


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The user config file: ``$XDG_CONFIG_HOME/farmtui/config.toml``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base else Path(env.get("HOME") or Path.home()) / ".config"
    return root / "farmtui" / "config.toml"


def normalize_url(url: str) -> str:
    """``127.0.0.1:7878/`` -> ``http://127.0.0.1:7878``; refuse anything but a plain http(s) URL.

    A URL with a user or password is refused without repeating it: the token
    is the credential, and a password in the URL would end up in messages.
    """
    url = given = url.strip()
    if not url.rstrip("/"):
        raise ConfigError("the leader URL is empty")
    if "://" not in url:
        url = "http://" + url
    # After the scheme is known: "http://" stripped first read as the host "http:".
    url = url.rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # reading it checks it: ValueError for "host:abc"
    except ValueError as exc:
        shown = url if "@" not in url else "(not shown: it has an @)"
        raise ConfigError(f"the leader URL {shown} is malformed: {exc}") from None
    if "@" in parts.netloc:
        raise ConfigError(
            "the leader URL must not carry a user or password; give the token with "
            "--token, --token-file or FARM_TOKEN"
        )
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"the leader URL {url!r} must start with http:// or https://")
    if not parts.hostname:  # (shown as given: "http://" stripped of its slashes read "http:")
        raise ConfigError(f"the leader URL {given!r} names no host: http://HOST:PORT")
    return url


def leader_urls(value: str) -> list[str]:
    """``URL1,URL2``: every leader of a farm whose leaders share PostgreSQL, each normalized.

    One URL gives a list of one; commands try them in turn and use the one
    that is active (a standby answers 503 with ``X-Farm-Role: standby``).
    """
    urls = [normalize_url(url) for url in value.split(",") if url.strip()]
    if not urls:
        raise ConfigError("the leader URL is empty")
    return urls


def normalize_leaders(value: str) -> str:
    """``normalize_url`` for each URL of a comma list; the list as one string again."""
    return ",".join(leader_urls(value))


def check_token(token: str, source: str) -> str:
    """The token, or ConfigError (not repeating it) when it cannot be one."""
    if not token:
        raise ConfigError(f"the token from {source} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(
            f"the token from {source} has spaces or control characters; a token has neither"
        )
    if not token.isascii():  # it goes in an HTTP header: one was a traceback (break round 33b)
        raise ConfigError(
            f"the token from {source} has characters that are not ASCII; a token has none"
        )
    return token


# A token is 43 characters: a token file is read this far at most (``/dev/zero`` grew
# a reader's memory without end), and a pipe (``--token-file <(pass show farm)``) is
# waited for this long (one nobody writes to hung the command).
MAX_TOKEN_FILE_BYTES = 4096
TOKEN_PIPE_WAIT = 10.0


def read_token_file(path: str | Path) -> str:
    """The token in ``path`` (surrounding whitespace dropped), or ConfigError."""
    try:
        data = _read_bounded(Path(path).expanduser(), str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"token file {path} is far too big to hold a token")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"token file {path} is not text") from None
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token


def _read_bounded(path: Path, shown: str) -> bytes:
    """Up to ``MAX_TOKEN_FILE_BYTES + 1`` bytes of a regular file or a pipe."""
    import select
    import time

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        kind = os.fstat(fd).st_mode
        if stat.S_ISREG(kind):
            return os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
        if not (stat.S_ISFIFO(kind) or stat.S_ISSOCK(kind)):
            raise ConfigError(f"token file {shown} is not a file")
        data = b""
        deadline = time.monotonic() + TOKEN_PIPE_WAIT
        while len(data) <= MAX_TOKEN_FILE_BYTES:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ConfigError(f"token file {shown}: nothing came in {TOKEN_PIPE_WAIT:g} s")
            try:
                block = os.read(fd, MAX_TOKEN_FILE_BYTES + 1 - len(data))
            except BlockingIOError:
                continue
            if block:
                data += block
            elif data:
                break  # its writer closed it: the whole token is in
            else:
                time.sleep(0.05)  # no writer has opened it yet (it reads as ended)
        return data
    finally:
        os.close(fd)


def load_user_config(env: Mapping[str, str] | None = None) -> UserConfig:
    """The user config file's contents; an empty UserConfig when there is none."""
    path = config_path(env)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UserConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    import tomllib  # only now: every `farm` command gets here, most without a file (5-8 ms)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"leader", "token_file", "ca"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: leader, token_file, ca)")
    leader = data.get("leader")
    token_file = data.get("token_file")
    ca = data.get("ca")
    if leader is not None and not isinstance(leader, str):
        raise ConfigError(f"{path}: leader must be a string")
    if token_file is not None and not isinstance(token_file, str):
        raise ConfigError(f"{path}: token_file must be a string")
    if ca is not None and not isinstance(ca, str):
        raise ConfigError(f"{path}: ca must be a string (the path of a PEM file)")
    return UserConfig(
        leader=leader,
        token_file=Path(token_file) if token_file else None,
        ca=Path(ca).expanduser() if ca else None,
    )


def check_ca_file(path: str | Path, source: str) -> str:
    """The CA file's path if it can be read, or ConfigError saying in one line why not.

    Only readability is checked here; whether it holds certificates is found
    when the first https:// connection loads it (``farmtui.client``).
    """
    try:
        # Not a FIFO or a device: opening one waits for a writer, for ever.
        if not stat.S_ISREG(os.stat(Path(path).expanduser()).st_mode):
            raise ConfigError(f"the CA file {path} (from {source}) is not a regular file")
        with open(Path(path).expanduser(), "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the CA file {path} (from {source}): {exc.strerror or exc}"
        ) from None
    return str(Path(path).expanduser())


def write_user_config(leader: str, token_file: Path, env: Mapping[str, str] | None = None) -> Path:
    """Write the user config (mode 0600) so later commands find this leader; returns its path."""
    path = config_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# Written by `farm up`: where `farm` commands find the leader and the token.\n"
        f"leader = {_toml_string(normalize_url(leader))}\n"
        f"token_file = {_toml_string(str(token_file.resolve()))}\n"
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def resolve(
    leader: str | None = None,
    token: str | None = None,
    token_file: str | None = None,
    env: Mapping[str, str] | None = None,
    ca: str | None = None,
) -> Connection:
    """The leader URL, token and CA file, from flags, then the environment, then the user config."""
    env = os.environ if env is None else env
    user: UserConfig | None = None

    def user_config() -> UserConfig:
        nonlocal user
        if user is None:
            user = load_user_config(env)
        return user

    # A flag or variable given empty is an error, never a fall-back to the next source:
    # a script's ``--token "$ARTIST_TOKEN"`` with the variable unset ran as the admin
    # of the user config.
    if leader is not None:
        url, leader_source = leader, "--leader"
    elif env.get("FARM_LEADER") is not None:
        url, leader_source = env["FARM_LEADER"], "FARM_LEADER"
    elif user_config().leader:
        url, leader_source = user_config().leader or "", str(config_path(env))
    else:
        raise ConfigError(
            "no leader configured: pass --leader URL, set FARM_LEADER, or start one with `farm up`"
        )

    if token is not None:
        secret, token_source = token.strip(), "--token"
    elif token_file is not None:
        if not token_file:
            raise ConfigError("--token-file is empty")
        secret, token_source = read_token_file(token_file), token_file
    elif env.get(TOKEN_VARIABLE) is not None:
        secret, token_source = env[TOKEN_VARIABLE].strip(), TOKEN_VARIABLE
    elif env.get("FARM_TOKEN_FILE") is not None:
        secret, token_source = read_token_file(env["FARM_TOKEN_FILE"]), env["FARM_TOKEN_FILE"]
    elif (path := user_config().token_file) is not None:
        secret, token_source = read_token_file(path), str(path)
    else:
        raise ConfigError(
            "no token configured: pass --token or --token-file, set FARM_TOKEN, "
            "or start a farm with `farm up`"
        )
    if ca:
        ca_file: str | None = check_ca_file(ca, "--ca")
    elif env.get("FARM_CA"):
        ca_file = check_ca_file(env["FARM_CA"], "FARM_CA")
    elif (ca_path := user_config().ca) is not None:
        ca_file = check_ca_file(ca_path, str(config_path(env)))
    else:
        ca_file = None
    return Connection(
        normalize_leaders(url),
        check_token(secret, token_source),
        leader_source,
        token_source,
        ca=ca_file,
    )
