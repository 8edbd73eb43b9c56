"""A dispatch pass picks, for each chunk, the fitting node with the most free slots (ties: by
name), as a scan of every node would, in O(log n) a pick."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.scheduler.dispatch_pass import _NodePicker

names = st.sampled_from([f"n{i:02d}" for i in range(12)])


def scan(free: dict[str, int], fits: set[str]) -> str | None:
    best: str | None = None
    for name, room in free.items():
        if room > 0 and name in fits and (best is None or (room, best) > (free[best], name)):
            best = name
    return best


@given(
    free=st.dictionaries(names, st.integers(0, 4), max_size=12),
    fits=st.sets(names),
    picks=st.integers(1, 30),
    lose_fit=st.sets(names),
)
def test_each_pick_is_the_fitting_node_with_most_room_as_a_full_scan(
    free: dict[str, int], fits: set[str], picks: int, lose_fit: set[str]
) -> None:
    fitting = set(fits)
    picker = _NodePicker(free, lambda name: name in fitting)
    for turn in range(picks):
        expected = scan(free, fitting)
        assert picker.pick() == expected
        if expected is None:
            break
        free[expected] -= 1  # the chunk took a slot there
        if free[expected] == 0:
            del free[expected]
        if turn == 1:
            fitting -= lose_fit  # a node's GPUs or a limit's units ran out meanwhile
