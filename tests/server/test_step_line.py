"""The group commit's line: steps ahead first, then sources in turn (``server.step_line``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.step_line import QUANTUM, Mark, StepLine


def drain(line: StepLine[str]) -> list[str]:
    taken = []
    while (step := line.take()) is not None:
        taken.append(step)
    assert len(line) == 0
    return taken


def test_a_node_flooding_reports_does_not_hold_up_another_nodes_report() -> None:
    """First come, first served, thirty links of a thousand reports a frame put a healthy
    node's reports behind millions of steps, and a job of 4 s took 14."""
    line: StepLine[str] = StepLine()
    for n in range(1000):
        line.put(f"flood {n}", "flood0")
    line.put("finished", "node1")
    taken = drain(line)
    assert taken.index("finished") == QUANTUM  # after a few of the flood's, not a thousand


def test_steps_ahead_go_first_in_their_order_then_sources_in_turn() -> None:
    line: StepLine[str] = StepLine()
    line.put("a1", "a")
    line.put("a2", "a")
    line.put("b1", "b")
    line.put("disconnect", None, ahead=True)
    line.put("hello", None, ahead=True)
    line.put("api", None)
    assert len(line) == 6
    assert drain(line) == ["disconnect", "hello", "a1", "a2", "b1", "api"]


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.booleans()), max_size=300))
def test_every_step_is_taken_once_and_each_sources_in_the_order_it_came(
    puts: list[tuple[str, bool]],
) -> None:
    line: StepLine[str] = StepLine()
    for number, (source, ahead) in enumerate(puts):
        line.put(f"{source}{number}{'!' if ahead else ''}", source, ahead=ahead)
    taken = drain(line)
    assert sorted(taken) == sorted(
        f"{source}{n}{'!' if ahead else ''}" for n, (source, ahead) in enumerate(puts)
    )
    ahead = [step for step in taken if step.endswith("!")]
    assert taken[: len(ahead)] == ahead  # all of them first
    for source in "abcd":
        mine = [int(step[1:]) for step in taken[len(ahead) :] if step[0] == source]
        assert mine == sorted(mine)
    # Sources take turns: while two sources have steps waiting, neither takes more than
    # QUANTUM running.
    rest = taken[len(ahead) :]
    for at in range(len(rest) - QUANTUM):
        running = rest[at : at + QUANTUM + 1]
        if all(step[0] == running[0][0] for step in running):
            assert all(step[0] == running[0][0] for step in rest[at:])


# What is done to the line: put a step of a source (ahead or not), take one, or mark.
Action = tuple[str, str, bool]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "put", "take", "mark"]), st.sampled_from("abc"), st.booleans()
        ),
        max_size=200,
    )
)
def test_a_mark_is_passed_once_every_step_waiting_at_it_was_taken(actions: list[Action]) -> None:
    """``Leader.write`` goes on once the steps waiting when it came are applied: not
    before, and not only once the line is empty (a flood may never let it be)."""
    line: StepLine[int] = StepLine()
    waiting: set[int] = set()
    marks: list[tuple[Mark, set[int]]] = []
    for number, (action, source, ahead) in enumerate(actions):
        if action == "put":
            line.put(number, source, ahead=ahead)
            waiting.add(number)
        elif action == "take":
            step = line.take()
            if step is not None:
                waiting.discard(step)
        else:
            marks.append((line.mark(), set(waiting)))
        for mark, before in marks:
            assert StepLine.passed(mark) == (not before & waiting)
