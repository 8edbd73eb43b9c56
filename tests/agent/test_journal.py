"""The journal of attempts reuses its files; one attempt's exit never passes for another's."""

from __future__ import annotations

from pathlib import Path

from agent.journal import Journal


def test_the_next_attempt_writes_into_the_files_of_the_last_one(tmp_path: Path) -> None:
    """Creating two files per chunk cost this machine's ext4 0.2-0.6 ms each."""
    journal = Journal(tmp_path / "journal")
    first = journal.write(b'{"a": 1}')
    inodes = (first.record.stat().st_ino, first.exit.stat().st_ino)
    journal.drop(first)
    second = journal.write(b'{"a": 2}')
    assert (second.record.stat().st_ino, second.exit.stat().st_ino) == inodes
    assert second.record.read_bytes() == b'{"a": 2}'


def test_a_reused_entry_never_carries_the_last_attempts_exit_status(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    first = journal.write(b"one")
    first.exit.write_text("0")  # the shim: the renderer ended on its own
    journal.drop(first)
    second = journal.write(b"two")  # then the agent dies before this one's renderer ends

    (found,) = Journal(tmp_path / "journal").found()  # the restarted agent
    assert (found.record, found.status) == (b"two", "")  # cut short: rendered again
    assert found.entry == second


def test_an_entry_its_shim_may_still_write_is_removed_not_reused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    frozen = journal.write(b"one")
    journal.drop(frozen, reuse=False)
    assert not frozen.record.exists()
    assert not frozen.exit.exists()
    frozen.exit.write_text("0")  # the shim thawed and wrote its status late
    nxt = journal.write(b"two")
    assert nxt.exit != frozen.exit
    assert nxt.exit.read_text().strip() == ""  # no status yet


def test_a_restarted_agent_finds_what_is_in_use_and_reuses_the_free_entries(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal")
    done, running, free = journal.write(b"done"), journal.write(b"running"), journal.write(b"x")
    done.exit.write_text("0")
    journal.drop(free)

    again = Journal(tmp_path / "journal")
    found = {f.record: f.status for f in again.found()}
    assert found == {b"done": "0", b"running": ""}
    assert again.write(b"new").record == free.record  # the free one, not a new file
    assert again.write(b"newer").record.name == "3.json"  # past every number in use
    assert running.record.read_bytes() == b"running"


def test_an_older_agents_entries_are_read_and_removed_when_done(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    folder.mkdir()
    (folder / "job1.1.2.json").write_bytes(b"old")
    (folder / "job1.1.2.exit").write_text("3\n")
    (folder / "job1.1.3.exit").write_text("0")  # its record is gone: forgotten

    journal = Journal(folder)
    (found,) = journal.found()
    assert (found.record, found.status) == (b"old", "3")
    journal.drop(found.entry)
    assert list(folder.iterdir()) == []
