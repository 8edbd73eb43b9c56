"""Where commands find the leader and token: flags > environment > `farm up`'s config."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from farmtui import config
from farmtui.config import (
    config_path,
    load_user_config,
    normalize_url,
    read_token_file,
    resolve,
    write_user_config,
)
from farmtui.errors import ConfigError


@pytest.fixture
def file_token(tmp_path: Path) -> Path:
    path = tmp_path / "admin.token"
    path.write_text("from-file\n", encoding="utf-8")
    return path


@pytest.fixture
def user_config(file_token: Path, isolated_config: Path) -> Path:
    return write_user_config("http://file-leader:7878", file_token)


def test_the_config_file_lives_under_xdg_config_home(tmp_path: Path) -> None:
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "farmtui/config.toml"
    assert config_path({"HOME": "/home/me"}) == Path("/home/me/.config/farmtui/config.toml")


def test_farm_up_config_is_private_and_read_back(user_config: Path, file_token: Path) -> None:
    assert stat.S_IMODE(user_config.stat().st_mode) == 0o600
    loaded = load_user_config()
    assert loaded.leader == "http://file-leader:7878"
    assert loaded.token_file == file_token.resolve()


def test_the_config_file_alone_is_enough(user_config: Path) -> None:
    conn = resolve()
    assert (conn.leader, conn.token) == ("http://file-leader:7878", "from-file")
    assert conn.leader_source == str(user_config)


def test_environment_beats_the_config_file(
    user_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_LEADER", "http://env-leader:1")
    monkeypatch.setenv("FARM_TOKEN", "from-env")
    conn = resolve()
    assert (conn.leader, conn.token) == ("http://env-leader:1", "from-env")
    assert (conn.leader_source, conn.token_source) == ("FARM_LEADER", "FARM_TOKEN")


def test_flags_beat_the_environment(
    user_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_LEADER", "http://env-leader:1")
    monkeypatch.setenv("FARM_TOKEN", "from-env")
    assert resolve(leader="http://flag:2", token="from-flag").token == "from-flag"
    assert resolve(leader="http://flag:2").leader == "http://flag:2"
    flag_file = tmp_path / "flag.token"
    flag_file.write_text("from-flag-file", encoding="utf-8")
    assert resolve(token_file=str(flag_file)).token == "from-flag-file"


def test_each_setting_falls_back_on_its_own(
    user_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARM_TOKEN", "from-env")
    conn = resolve(leader="http://flag:2")
    assert (conn.leader, conn.token) == ("http://flag:2", "from-env")
    monkeypatch.delenv("FARM_TOKEN")
    assert resolve(leader="http://flag:2").token == "from-file"


@pytest.mark.parametrize(
    ("flags", "env", "error"),
    [
        ({"token": ""}, {"FARM_TOKEN": "from-env"}, "the token from --token is empty"),
        ({"token": "  "}, {}, "the token from --token is empty"),
        ({"token_file": ""}, {"FARM_TOKEN": "from-env"}, "--token-file is empty"),
        ({}, {"FARM_TOKEN": ""}, "the token from FARM_TOKEN is empty"),
        ({"leader": ""}, {"FARM_LEADER": "http://env-leader:1"}, "the leader URL is empty"),
        ({}, {"FARM_LEADER": ""}, "the leader URL is empty"),
    ],
)
def test_a_setting_given_empty_is_an_error_not_the_next_source(
    user_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: dict[str, str],
    env: dict[str, str],
    error: str,
) -> None:
    """A script's ``--token "$ARTIST_TOKEN"`` with the variable unset ran with the admin
    token of the user config (or of FARM_TOKEN)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=error):
        resolve(**flags)


def test_token_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "t"
    token.write_text("  spaced  \n", encoding="utf-8")
    monkeypatch.setenv("FARM_TOKEN_FILE", str(token))
    assert resolve(leader="x:1").token == "spaced"


def test_nothing_configured_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="no leader configured: pass --leader URL"):
        resolve()
    with pytest.raises(ConfigError, match="no token configured"):
        resolve(leader="http://127.0.0.1:7878")


def test_unreadable_or_empty_token_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read token file"):
        resolve(leader="h:1", token_file=str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        resolve(leader="h:1", token_file=str(tmp_path / "empty"))


def test_a_broken_config_file_is_a_clear_error(isolated_config: Path) -> None:
    isolated_config.parent.mkdir(parents=True)
    isolated_config.write_text("leader = [", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        resolve()
    isolated_config.write_text('leeder = "x"', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'leeder'"):
        resolve()


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:7878", "http://127.0.0.1:7878"),
        ("http://farm:7878/", "http://farm:7878"),
        ("https://farm", "https://farm"),
    ],
)
def test_urls_are_normalized(given: str, url: str) -> None:
    assert normalize_url(given) == url


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ConfigError, match="must start with http"):
        normalize_url("ftp://farm")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:abc", "is malformed"),
        ("http://[::1:7878", "is malformed"),
        ("ftp://farm:21", "must start with http"),
        ("http://wrangler:s3cret@farm:7878", "must not carry a user or password"),
        # "http://" read as the host "http:" (break round 33c).
        ("http://", "names no host"),
        ("https:///", "names no host"),
        ("http://:7878", "names no host"),
    ],
)
def test_a_bad_leader_url_is_one_line_that_never_repeats_a_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        resolve(leader=url, token="t")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("token", ["ab\ncd", "ab\r\nX-Evil: 1", "two words"])
def test_a_token_that_cannot_be_one_is_refused_without_repeating_it(token: str) -> None:
    with pytest.raises(ConfigError, match="spaces or control characters") as caught:
        resolve(leader="http://farm:7878", token=token)
    assert "ab" not in str(caught.value)
    assert "words" not in str(caught.value)


def test_a_token_that_is_not_ascii_is_one_line_not_a_traceback() -> None:
    """It goes in an HTTP header, which took only Latin-1: a traceback (break round 33b)."""
    with pytest.raises(ConfigError, match="not ASCII") as caught:
        resolve(leader="http://farm:7878", token="s3cr€t")
    assert "s3cr" not in str(caught.value)


def test_a_token_file_that_is_no_file_or_far_too_big_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/dev/zero`` grew the reader's memory without end; a FIFO nobody writes to
    hung the command; a 50 MB file ended as "Connection reset by peer"."""
    monkeypatch.setattr(config, "TOKEN_PIPE_WAIT", 0.3)
    with pytest.raises(ConfigError, match="^token file /dev/zero is not a file$"):
        read_token_file("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="nothing came in 0.3 s$"):
        read_token_file(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 50_000)
    with pytest.raises(ConfigError, match="far too big to hold a token$"):
        read_token_file(big)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="is not text$"):
        read_token_file(binary)


def test_a_token_comes_through_a_pipe(tmp_path: Path) -> None:
    """``--token-file <(pass show farm)``: a pipe its writer fills."""
    read, write = os.pipe()
    os.write(write, b"  the-token\n")
    os.close(write)
    assert read_token_file(f"/dev/fd/{read}") == "the-token"
    os.close(read)
