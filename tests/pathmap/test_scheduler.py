"""The scheduler maps each assignment for the OS its node named in its hello."""

from __future__ import annotations

from farmtui.protocol import AgentHello, AssignChunk, JobSpec
from server.path_mapping import PathRule
from server.scheduler import Scheduler, SchedulerConfig

RULE = PathRule(
    source="/mnt/projects",
    to={"windows": "P:\\projects", "darwin": "/Volumes/projects"},
)


def _assignments(os_name: str) -> list[AssignChunk]:
    scheduler = Scheduler(SchedulerConfig(path_map=[RULE]))
    hello = AgentHello(name="n1", slots=1, os=os_name)
    scheduler.node_connected(hello, 1000.0)
    spec = JobSpec(
        frames="1-2",
        chunk=2,
        argv=["render", "/mnt/projects/shot/a.blend", "--lut=/mnt/projects/lut.cube", "{start}"],
        output="renders/f_####.png",
    )
    scheduler.submit("j1", spec, "alice", 1000.0)
    changes = scheduler.dispatch(1000.0)
    return [assignment.message for assignment in changes.assignments]


def test_a_windows_node_gets_windows_paths() -> None:
    (message,) = _assignments("windows")
    assert message.argv == [
        "render",
        "P:\\projects\\shot\\a.blend",
        "--lut=P:\\projects\\lut.cube",
        "{start}",
    ]
    assert message.output == "renders/f_####.png"


def test_a_darwin_node_gets_its_mount() -> None:
    (message,) = _assignments("darwin")
    assert message.argv[1] == "/Volumes/projects/shot/a.blend"


def test_a_node_of_an_os_without_a_target_gets_the_path_as_is() -> None:
    (message,) = _assignments("linux")
    assert message.argv[1] == "/mnt/projects/shot/a.blend"


def test_the_node_remembers_its_os() -> None:
    scheduler = Scheduler(SchedulerConfig())
    scheduler.node_connected(AgentHello(name="n1", slots=1, os="windows"), 1000.0)
    assert scheduler.nodes["n1"].os == "windows"
