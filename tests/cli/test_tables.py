"""The CLI's plain tables say what a user needs to see."""

from __future__ import annotations

from farmtui.protocol import AttemptView, ChunkView
from farmtui.tables import chunks_table


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
