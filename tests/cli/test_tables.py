"""The CLI's plain tables say what a user needs to see."""

from __future__ import annotations

from farmtui.printable import is_printable, printable
from farmtui.protocol import (
    AttemptView,
    ChunkView,
    FailureView,
    FrameRun,
    JobDetail,
    JobSpec,
    JobView,
)
from farmtui.tables import (
    cell_width,
    chunks_table,
    detail_text,
    failure_error,
    frames_line,
    job_summary,
    table,
)


def test_a_chunk_whose_last_attempt_is_still_stopping_says_where() -> None:
    chunk = ChunkView(
        index=3,
        frames=[4],
        state="queued",
        attempt=1,
        attempts=[AttemptView(number=1, node="n1", started=0.0, finished=1.0, outcome="killed")],
        stopping_on="n1",
    )
    row = chunks_table([chunk]).splitlines()[-1]
    assert "queued (stopping on n1)" in row


def a_job(state: str, *, frames: str = "1", spec: JobSpec | None = None) -> JobView:
    return JobView(
        id="j1", name="s", owner="a", state=state, priority=50, position=0,  # type: ignore[arg-type]
        frames=frames, chunk=1, renderer="generic", spec=spec or JobSpec(),
    )  # fmt: skip


def test_a_job_held_as_a_whole_shows_its_waiting_frames_held_as_the_console_does() -> None:
    """``farm show`` said "unassigned" where the console's grid said held (audit 28a)."""
    runs = [FrameRun(1, 18, "done", 17), FrameRun(2, 17, "unassigned"), FrameRun(36, 36, "done")]
    job = a_job("holding", frames="1-36")
    detail = JobDetail(job=job, chunks=[], frame_states={}, frame_runs=runs)
    assert frames_line(detail) == "frames    done 1-18x17,36 (3)  held 2-17 (16)  (job held)"
    job.state = "rendering"
    assert frames_line(detail) == "frames    done 1-18x17,36 (3)  unassigned 2-17 (16)"


def test_a_failure_says_why_before_the_renderers_last_line_in_the_cli_and_the_console() -> None:
    """The console's failures view showed a copy failure's last output line alone
    ("rendering"), not that the copy failed (audit 28a): one rule for both now."""
    copy = FailureView(
        job_id="j", job_name="n", chunk=0, frames="1", node="n1", attempt=1, finished=0.0,
        outcome="failed", reason="copy to the sync root failed: disk full",
        error_line="rendering",
    )  # fmt: skip
    assert failure_error(copy) == "copy to the sync root failed: disk full; rendering"
    from farmtui.console.widgets import failures_panel

    assert failures_panel.failure_error is failure_error


def test_a_block_by_an_operator_lasts_until_unblocked_not_a_year() -> None:
    """It showed as ``n1 (365d00h left)`` (audit 28a): a manual block has no end."""
    import time

    from farmtui.protocol import OPERATOR_BLOCK

    job = a_job("rendering")
    now = time.time()
    detail = JobDetail(
        job=job, chunks=[], frame_states={},
        blocked_nodes={"n1": now + OPERATOR_BLOCK, "n2": now + 600},
    )  # fmt: skip
    (line,) = [line for line in detail_text(detail).splitlines() if line.startswith("blocked")]
    assert line.startswith("blocked   n1 (until unblocked), n2 (")
    assert line.endswith(" left)")


def test_show_gives_the_limits_farm_set_changes() -> None:
    """``farm show`` never showed a job's timeouts, retries or machine limit (audit 28a)."""
    from farmtui.protocol import Timeouts

    spec = JobSpec(
        max_running=4, retries=2, retry_delay=10,
        timeouts=Timeouts(max_render=3600, per_frame=True, on_timeout="requeue"),
    )  # fmt: skip
    job = a_job("queued", spec=spec)
    text = detail_text(JobDetail(job=job, chunks=[], frame_states={}))
    assert (
        "limits    max-running 4; retries 2 (delay 10s); max render 1h00m per frame, "
        "on timeout requeue"
    ) in text.splitlines()
    job.spec = JobSpec()
    assert "limits" not in detail_text(JobDetail(job=job, chunks=[], frame_states={}))


# --- untrusted text (issue 9, item 6): control characters are shown, never sent raw ---


def test_every_cell_escapes_control_characters_before_the_widths_are_measured() -> None:
    text = table(["NAME", "N"], [["a\x1b[2Jb\nc", "1"], ["plain", "22"]], right={1})
    assert "\x1b" not in text
    header, first, second = text.splitlines()
    assert first == r"a\x1b[2Jb\nc   1"
    assert second == "plain" + " " * 9 + "22"
    assert len(header) <= len(first) == len(second)


def test_printable_names_each_kind_of_control_character() -> None:
    assert printable("ok [b]markup[/b] C:\\path") == "ok [b]markup[/b] C:\\path"
    assert printable("\x1b\n\t\r\x00\x7f\x9b\u202e\u2028") == r"\x1b\n\t\r\x00\x7f\x9b\u202e\u2028"
    # Invisible characters that make two names look the same are shown too.
    assert printable("shot\u200b_010\ufeff\xad") == r"shot\u200b_010\ufeff\xad"
    assert printable("family \U0001f468\u200d\U0001f469") == "family \U0001f468\u200d\U0001f469"
    # Multi-line text (a log) keeps its lines and tabs; CRLF is a newline.
    assert printable("a\tb\r\nc\x1b[0m\rd", multiline=True) == "a\tb\nc\\x1b[0m\\rd"
    assert is_printable("shot_010 [v2]")
    assert not is_printable("shot\n010")


def test_job_summary_and_detail_lines_stay_one_line_each() -> None:
    spec = JobSpec(name="x", scene="/proj/\x1b]0;t\x07.blend", output="out/\n####.png")
    job = JobView(
        id="j1",
        name="a\nb",
        owner="\x1b[31meve",
        state="queued",
        priority=50,
        position=0,
        frames="1",
        chunk=1,
        renderer="blender",
        spec=spec,
    )
    assert job_summary(job) == r"j1  a\nb  queued"
    chunk = ChunkView(index=0, frames=[1], node="n\x1b[2J")
    text = detail_text(JobDetail(job=job, chunks=[chunk], frame_states={"1": "unassigned"}))
    assert "\x1b" not in text
    assert "\x07" not in text
    lines = text.splitlines()
    assert r"name      a\nb" in lines
    assert r"owner     \x1b[31meve" in lines
    assert r"renderer  blender  scene /proj/\x1b]0;t\x07.blend" in lines
    assert r"output    out/\n####.png" in lines
    assert any(line.split()[:4] == ["0", "1", "queued", r"n\x1b[2J"] for line in lines)


def test_chunks_held_ahead_of_a_slot_are_not_counted_as_rendering() -> None:
    """A node of 4 slots holding 8 short chunks showed 8/4 (break round 27a)."""
    from farmtui.protocol import ChunkRef, NodeView
    from farmtui.tables import nodes_table, slots_cell

    def node(held: int) -> NodeView:
        refs = [ChunkRef(job_id="j", chunk=n, attempt=1) for n in range(held)]
        return NodeView(name="n1", state="online", slots=4, running=refs)

    assert [slots_cell(node(n)) for n in (0, 3, 4, 8)] == ["0/4", "3/4", "4/4", "4/4+4"]
    assert "4/4+4" in nodes_table([node(8)])


def test_columns_line_up_after_wide_and_combining_characters() -> None:
    """A name in 日本語 pushed every column after it out of line in `farm jobs`."""
    rows = [
        ["日本 shot", "alice", "done"],
        ["plain", "bob", "held"],
        ["e\u0301te", "長長長長", "x"],
    ]
    lines = table(["NAME", "OWNER", "STATE"], rows, right=set()).splitlines()
    # The third column starts at the same terminal column on every line.
    starts = set()
    for line, row in zip(lines, [["NAME", "OWNER", "STATE"], *rows], strict=True):
        before = line[: line.rindex(row[2])]
        starts.add(cell_width(before))
    assert len(starts) == 1, lines
    assert cell_width("日本") == 4
    assert cell_width("e\u0301") == 1
    # As tmux draws them: Thai vowel marks, a decomposed Hangul syllable, an enclosing mark.
    assert cell_width("\u0e17\u0e35\u0e48\u0e19\u0e35\u0e48") == 2
    assert cell_width("\u1100\u1161\u11a8") == 2
    assert cell_width("x\u20dd") == 1
