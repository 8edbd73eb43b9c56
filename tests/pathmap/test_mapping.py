"""Path mapping rules, every OS pair: server.path_mapping without a leader."""

from __future__ import annotations

import msgspec
import pytest

from farmtui.protocol import AssignChunk, OsName, platform_os
from server.path_mapping import (
    PathMapError,
    PathRule,
    check_rules,
    map_assignment,
    map_path,
    map_token,
    node_os,
    resolve,
)

PROJECTS = PathRule(
    source="/mnt/projects",
    to={"windows": "P:\\projects", "darwin": "/Volumes/projects", "linux": "/mnt/projects"},
)
FROM_WINDOWS = PathRule(
    source="P:\\projects",
    to={"linux": "/mnt/projects", "darwin": "/Volumes/projects"},
)
FROM_MAC = PathRule(
    source="/Volumes/projects",
    to={"linux": "/mnt/projects", "windows": "P:\\projects"},
)
FROM_UNC = PathRule(
    source="\\\\filer\\show",
    to={"linux": "/mnt/show", "darwin": "/Volumes/show", "windows": "S:\\"},
)
TO_UNC = PathRule(source="/mnt/show", to={"windows": "\\\\filer\\show"})
RULES = [PROJECTS, FROM_WINDOWS, FROM_MAC, FROM_UNC]


@pytest.mark.parametrize(
    ("path", "os_name", "expected"),
    [
        # linux -> windows, darwin, linux
        ("/mnt/projects/shot/a.blend", "windows", "P:\\projects\\shot\\a.blend"),
        ("/mnt/projects/shot/a.blend", "darwin", "/Volumes/projects/shot/a.blend"),
        ("/mnt/projects/shot/a.blend", "linux", "/mnt/projects/shot/a.blend"),
        # windows -> linux, darwin (either separator, drive letter in any case)
        ("P:\\projects\\shot\\a.blend", "linux", "/mnt/projects/shot/a.blend"),
        ("p:/Projects/shot/a.blend", "darwin", "/Volumes/projects/shot/a.blend"),
        # darwin -> linux, windows
        ("/Volumes/projects/shot/a.blend", "linux", "/mnt/projects/shot/a.blend"),
        ("/Volumes/projects/shot/a.blend", "windows", "P:\\projects\\shot\\a.blend"),
        # UNC -> every OS (the target a drive root)
        ("\\\\filer\\show\\sq1\\a.nk", "linux", "/mnt/show/sq1/a.nk"),
        ("\\\\FILER\\Show\\sq1\\a.nk", "darwin", "/Volumes/show/sq1/a.nk"),
        ("//filer/show/sq1/a.nk", "windows", "S:\\sq1\\a.nk"),
        # the prefix itself
        ("/mnt/projects", "windows", "P:\\projects"),
        ("/mnt/projects/", "windows", "P:\\projects\\"),
    ],
)
def test_every_os_pair(path: str, os_name: OsName, expected: str) -> None:
    assert map_path(path, RULES, os_name) == expected


def test_linux_to_unc() -> None:
    assert map_path("/mnt/show/sq1/a.nk", [TO_UNC], "windows") == "\\\\filer\\show\\sq1\\a.nk"


def test_case_sensitive_by_default_for_a_posix_source() -> None:
    assert map_path("/MNT/projects/a", [PROJECTS], "windows") == "/MNT/projects/a"
    loose = PathRule(source="/mnt/projects", to={"windows": "P:\\"}, case_sensitive=False)
    assert map_path("/MNT/Projects/a", [loose], "windows") == "P:\\a"


def test_a_windows_source_may_be_made_case_sensitive() -> None:
    strict = PathRule(source="P:\\projects", to={"linux": "/mnt/p"}, case_sensitive=True)
    assert map_path("P:\\Projects\\a", [strict], "linux") == "P:\\Projects\\a"
    assert map_path("P:\\projects\\a", [strict], "linux") == "/mnt/p/a"


def test_longest_prefix_wins_whatever_the_order() -> None:
    rules = [
        PathRule(source="/mnt/projects", to={"windows": "P:\\"}),
        PathRule(source="/mnt/projects/show", to={"windows": "S:\\"}),
    ]
    assert map_path("/mnt/projects/show/a", rules, "windows") == "S:\\a"
    assert map_path("/mnt/projects/other/a", rules, "windows") == "P:\\other\\a"
    assert map_path("/mnt/projects/show/a", rules[::-1], "windows") == "S:\\a"


def test_equal_sources_the_first_rule_wins() -> None:
    rules = [
        PathRule(source="/mnt/a", to={"windows": "A:\\"}),
        PathRule(source="/mnt/a/", to={"windows": "B:\\"}),
    ]
    assert resolve("/mnt/a/x", rules, "windows") == ("A:\\x", 1)


def test_only_at_a_component_boundary() -> None:
    assert map_path("/mnt/projects2/a", [PROJECTS], "windows") == "/mnt/projects2/a"
    assert map_path("/mnt/proj", [PROJECTS], "windows") == "/mnt/proj"
    assert map_path("P:\\projectsX\\a", [FROM_WINDOWS], "linux") == "P:\\projectsX\\a"


def test_no_match_is_left_alone() -> None:
    for path in ("/srv/other/a.blend", "renders/frame_####.png", "", "-b", "{scene}"):
        assert resolve(path, RULES, "windows") == (path, 0)


def test_a_rule_without_the_nodes_os_does_not_apply() -> None:
    only_windows = PathRule(source="/mnt/projects", to={"windows": "P:\\"})
    assert map_path("/mnt/projects/a", [only_windows], "darwin") == "/mnt/projects/a"


def test_root_source() -> None:
    rule = PathRule(source="C:\\", to={"linux": "/mnt/c"})
    assert map_path("C:\\Users\\me\\a.blend", [rule], "linux") == "/mnt/c/Users/me/a.blend"


def test_tokens_whole_or_after_equals() -> None:
    assert map_token("--scene=/mnt/projects/a.blend", RULES, "windows") == (
        "--scene=P:\\projects\\a.blend"
    )
    assert map_token("-o", RULES, "windows") == "-o"
    assert map_token("x=/srv/a", RULES, "windows") == "x=/srv/a"


def _assign(**fields: object) -> AssignChunk:
    base: dict[str, object] = {
        "job_id": "j1",
        "chunk": 0,
        "attempt": 1,
        "renderer": "generic",
        "argv": ["render", "{scene}", "--out={output}", "/mnt/projects/lut.cube"],
        "frames": [1],
        "scene": "/mnt/projects/shot/a.blend",
        "output": "renders/f_####.png",
        "outdir": "renders",
        "env": {"OCIO": "/mnt/projects/ocio/config.ocio", "MODE": "fast"},
    }
    base.update(fields)
    return msgspec.convert(base, AssignChunk)


def test_assignment_for_windows_puts_the_scene_in_the_command() -> None:
    mapped = map_assignment(_assign(), RULES, "windows")
    assert mapped.argv == [
        "render",
        "P:\\projects\\shot\\a.blend",
        "--out={output}",
        "P:\\projects\\lut.cube",
    ]
    # The agent reads ``scene`` as a POSIX path: a Windows one is already in the argv.
    assert mapped.scene == ""
    assert mapped.env == {"OCIO": "P:\\projects\\ocio\\config.ocio", "MODE": "fast"}
    # Relative to the sync root, which each agent names itself: unchanged.
    assert (mapped.output, mapped.outdir) == ("renders/f_####.png", "renders")


def test_assignment_for_darwin_keeps_the_scene_field() -> None:
    mapped = map_assignment(_assign(), RULES, "darwin")
    assert mapped.scene == "/Volumes/projects/shot/a.blend"
    assert mapped.argv[1] == "/Volumes/projects/shot/a.blend"


def test_assignment_scene_braces_stay_literal() -> None:
    message = _assign(argv=["r", "{scene}", "{{x}}"], scene="/mnt/projects/{a}.blend")
    mapped = map_assignment(message, RULES, "windows")
    assert mapped.argv == ["r", "P:\\projects\\{{a}}.blend", "{{x}}"]


def test_a_target_with_braces_reaches_the_renderer_as_a_folder_not_a_token() -> None:
    from farmtui.renderers import expand

    guid = PathRule(
        source="/mnt/projects",
        to={"windows": "P:\\{3F2504E0}", "darwin": "/Volumes/{outdir}"},
    )
    message = _assign(
        argv=["r", "/mnt/projects/lut.cube", "--ocio=/mnt/projects/{{c}}.ocio"], scene=""
    )
    windows = map_assignment(message, [guid], "windows")
    assert expand(windows.argv, {}) == [
        "r",
        "P:\\{3F2504E0}\\lut.cube",
        "--ocio=P:\\{3F2504E0}\\{c}.ocio",
    ]
    darwin = map_assignment(message, [guid], "darwin")
    assert expand(darwin.argv, {"outdir": "/stage"})[1] == "/Volumes/{outdir}/lut.cube"
    # The environment is not expanded by the agent: its values stay as written.
    assert windows.env["OCIO"] == "P:\\{3F2504E0}\\ocio\\config.ocio"


def test_assignment_without_rules_or_match_is_the_same_object() -> None:
    message = _assign(scene="", argv=["r", "/srv/a"], env={})
    assert map_assignment(message, [], "windows") is message
    assert map_assignment(message, RULES, "windows") is message


def test_old_agents_are_the_leaders_os() -> None:
    assert node_os("") == node_os("plan9") == platform_os(__import__("sys").platform)
    assert node_os("windows") == "windows"


@pytest.mark.parametrize(
    ("platform", "expected"),
    [("linux", "linux"), ("win32", "windows"), ("cygwin", "windows"), ("darwin", "darwin")],
)
def test_platform_os(platform: str, expected: str) -> None:
    assert platform_os(platform) == expected


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([PathRule(source=" ", to={"linux": "/a"})], "path_map rule 1: from must not be empty"),
        (
            [PathRule(source="/a", to={"win": "C:\\a"})],
            "path_map rule 1 (from '/a'): unknown OS 'win' in to (known: linux, windows, darwin)",
        ),
        (
            [PROJECTS, PathRule(source="/mnt/projects/", to={"linux": "/b"})],
            "path_map rule 2 (from '/mnt/projects/'): the same source as rule 1",
        ),
        (
            [FROM_WINDOWS, PathRule(source="p:/PROJECTS", to={"linux": "/b"})],
            "path_map rule 2 (from 'p:/PROJECTS'): the same source as rule 1",
        ),
        ([PathRule(source="mnt/a", to={"linux": "/a"})], "from must be an absolute path"),
        ([PathRule(source="/a")], "no target"),
        ([PathRule(source="/a", to={"windows": ""})], "to.windows must not be empty"),
        ([PathRule(source="/a", to={"windows": "/x"})], "to.windows '/x' must be absolute"),
        ([PathRule(source="/a", to={"linux": "C:\\x"})], "must be absolute (/...)"),
    ],
)
def test_bad_rules(rules: list[PathRule], message: str) -> None:
    with pytest.raises(PathMapError) as caught:
        check_rules(rules)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_good_rules_pass() -> None:
    check_rules([*RULES, TO_UNC])
