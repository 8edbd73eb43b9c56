"""Every message an agent sends fits in a batch: the leader refuses longer frames unread."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.report_size import fit
from farmtui.protocol import (
    MAX_BATCH_BYTES,
    AgentLog,
    AgentToLeader,
    ChunkFinished,
    ChunkOutput,
    ChunkRef,
    ChunkStarted,
    FramesWritten,
    Heartbeat,
    KeptStaged,
    agent_to_leader,
    encode,
)

IDS: dict[str, Any] = {"job_id": "j1", "chunk": 3, "attempt": 2}


def fitted(message: AgentToLeader) -> list[AgentToLeader]:
    parts = fit(message)
    for part in parts:
        data = encode(part)
        assert len(data) <= MAX_BATCH_BYTES, (type(part).__name__, len(data))
        assert agent_to_leader.decode(data) == part  # still a message the leader reads
    return parts


def test_a_renderers_flood_of_long_lines_goes_in_several_messages_every_line_in_order() -> None:
    # 200 lines of 16 kB (the agent's longest) in one flush: 3.2 MB, once one message.
    lines = [f"{n:04d}" + "x" * 16_380 for n in range(200)]
    parts = fitted(ChunkOutput(**IDS, lines=lines))
    assert len(parts) > 1
    assert [line for part in parts for line in part.lines] == lines  # type: ignore[union-attr]
    assert all(isinstance(part, ChunkOutput) and part.attempt == 2 for part in parts)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from('a\x01"\\é\U0001f600\n'), max_size=40_000),
        max_size=30,
    )
)
def test_lines_of_any_characters_fit_and_none_is_lost(lines: list[str]) -> None:
    """Control characters take 6 bytes of JSON, an emoji 4: the worst cases of a line."""
    parts = fitted(AgentLog(lines=lines))
    joined = [line for part in parts for line in part.lines]  # type: ignore[union-attr]
    assert joined == lines


def test_a_line_longer_than_a_message_is_shortened_and_says_so() -> None:
    line = "\x01" * 100_000  # 600 kB of JSON
    (part,) = fitted(AgentLog(lines=[line]))
    assert isinstance(part, AgentLog)
    assert part.lines[0].endswith("more characters)")


def test_many_frames_written_go_in_several_reports() -> None:
    frames = list(range(-999_999_999, -999_999_999 + 60_000))
    parts = fitted(FramesWritten(**IDS, frames=frames, staged=True))
    assert len(parts) >= 3
    assert [f for part in parts for f in part.frames] == frames  # type: ignore[union-attr]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 5_000), st.integers(1, 255))
def test_kept_outputs_go_in_pages_the_leader_reads(count: int, name: int) -> None:
    """At most ``MAX_KEPT_LISTED`` a page, each within a batch, whatever a job folder's
    name (a staging folder's names are up to 255 characters)."""
    refs = [ChunkRef(job_id="j" * name, chunk=n, attempt=1) for n in range(count)]
    parts = fitted(KeptStaged(kept=refs))
    assert [r for part in parts for r in part.kept] == refs  # type: ignore[union-attr]


def test_a_huge_chunks_missing_frames_are_shortened_not_refused() -> None:
    """A chunk of a million frames that wrote none: its reason names every one of them."""
    missing = list(range(1, 1_000_001))
    reason = f"exited 0 but did not write frame(s) {', '.join(map(str, missing))}"
    report = ChunkFinished(**IDS, outcome="failed", exit_status="0", reason=reason, missing=missing)
    (part,) = fitted(report)
    assert isinstance(part, ChunkFinished)
    assert part.reason.startswith("exited 0 but did not write frame(s) 1, 2, 3")
    assert part.reason.endswith("more characters)")
    assert part.missing == missing[: len(part.missing)]
    assert len(part.missing) > 1000
    assert part.outcome == "failed"
    assert part.seq == report.seq


def test_a_huge_command_is_shortened_for_the_log() -> None:
    command = ["render", *(f"--arg{n}=" + "v" * 1000 for n in range(1000))]
    (part,) = fitted(ChunkStarted(**IDS, pid=42, command=command))
    assert isinstance(part, ChunkStarted)
    assert part.command[:2] == command[:2]
    assert part.command[-1].endswith("more arguments)")
    assert part.pid == 42


def test_small_messages_go_as_they_are() -> None:
    for message in (
        Heartbeat(beat=3),
        ChunkOutput(**IDS, lines=["frame 1 of 10"]),
        FramesWritten(**IDS, frames=[1, 2], staged=False),
        ChunkFinished(**IDS, outcome="done", exit_status="0"),
        ChunkStarted(**IDS, pid=1, command=["blender", "-b", "scene.blend"]),
    ):
        assert fit(message) == [message]
        assert fit(message)[0] is message
