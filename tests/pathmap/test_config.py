"""``[[path_map]]`` in leader.toml: read in order, refused at start in one line naming the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import read_config
from server.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "leader.toml").write_text(text, encoding="utf-8")
    return tmp_path


def test_rules_are_read_in_order(tmp_path: Path) -> None:
    config = read_config(
        _write(
            tmp_path,
            """
[[path_map]]
from = "/mnt/projects"
to.windows = "P:\\\\projects"
to.darwin = "/Volumes/projects"

[[path_map]]
from = "P:\\\\projects"
to.linux = "/mnt/projects"
case_sensitive = true
""",
        )
    )
    first, second = config.path_map
    assert first.source == "/mnt/projects"
    assert first.to == {"windows": "P:\\projects", "darwin": "/Volumes/projects"}
    assert first.case_sensitive is None
    assert (second.source, second.case_sensitive) == ("P:\\projects", True)


def test_no_rules_by_default(tmp_path: Path) -> None:
    assert read_config(tmp_path).path_map == []


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[[path_map]]\nfrom = ""\nto.linux = "/a"\n',
            "path_map rule 1: from must not be empty",
        ),
        (
            '[[path_map]]\nfrom = "/a"\nto.win32 = "C:\\\\a"\n',
            "path_map rule 1 (from '/a'): unknown OS 'win32' in to",
        ),
        (
            '[[path_map]]\nfrom = "/a"\nto.windows = "A:\\\\"\n'
            '[[path_map]]\nfrom = "/b"\nto.windows = "B:\\\\"\n'
            '[[path_map]]\nfrom = "/a/"\nto.windows = "C:\\\\"\n',
            "path_map rule 3 (from '/a/'): the same source as rule 1",
        ),
        ('[[path_map]]\nto.linux = "/a"\n', "missing required field `from`"),
        ('[[path_map]]\nfrom = "/a"\nto.linux = "/b"\ncase = 1\n', "unknown field `case`"),
    ],
)
def test_bad_rules_stop_the_leader_with_one_line(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_config(_write(tmp_path, toml))
    text = str(caught.value)
    assert expected in text
    assert "leader.toml" in text
    assert "\n" not in text
