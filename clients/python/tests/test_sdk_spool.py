"""The event spool: durable before `append` returns, acknowledged by (source, id), and
readable after a crash, a torn last record included."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from allotment_client.spool import LOG, Spool, SpoolLocked, event_key


def event(n: int, source: str = "tests") -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": f"e-{n}",
        "source": source,
        "type": "api.call",
        "subject": "acme",
        "data": {"count": n},
    }


def test_events_stay_pending_until_acknowledged_across_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([event(n) for n in range(5)])
    spool.append([event(2)])  # already pending: kept once
    assert [e["id"] for e in spool.pending()] == [f"e-{n}" for n in range(5)]
    spool.acknowledge([event_key(event(1)), event_key(event(3)), ("tests", "never-sent")])
    with pytest.raises(SpoolLocked):
        Spool(tmp_path)
    spool.close()

    reopened = Spool(tmp_path)
    assert [e["id"] for e in reopened.pending()] == ["e-0", "e-2", "e-4"]
    assert reopened.pending(limit=2) == [event(0), event(2)]
    reopened.acknowledge(event_key(e) for e in reopened.pending())
    assert len(reopened) == 0 and (tmp_path / LOG).stat().st_size == 0
    reopened.close()


def test_a_torn_or_corrupt_record_is_skipped_and_the_next_append_is_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([event(1), event(2)])
    spool.close()
    log = tmp_path / LOG
    lines = log.read_bytes().splitlines(keepends=True)
    corrupt = lines[1].replace(b'"e-2"', b'"e-9"')  # a flipped byte: the checksum fails
    log.write_bytes(lines[0] + corrupt + lines[1][: len(lines[1]) // 2])  # and a torn tail

    spool = Spool(tmp_path)
    assert [e["id"] for e in spool.pending()] == ["e-1"]
    spool.append([event(3)])
    spool.close()
    assert [e["id"] for e in Spool(tmp_path).pending()] == ["e-1", "e-3"]


def test_sigkill_mid_append_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    writer = textwrap.dedent(
        f"""
        import sys
        from allotment_client.spool import Spool
        spool = Spool({str(tmp_path)!r})
        n = 0
        while True:
            spool.append([{{"id": f"e-{{n + i}}", "source": "kill", "type": "t",
                            "subject": "acme", "data": "x" * 2000}} for i in range(50)])
            n += 50
            print(n, flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    written = 0
    while written < 2000:
        written = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait(10)

    spool = Spool(tmp_path)  # the lock died with the process
    ids = [e["id"] for e in spool.pending()]
    assert len(ids) >= written  # every append that returned is there
    assert ids == [f"e-{n}" for n in range(len(ids))]  # in order, nothing twice, no gap
    spool.close()


def test_a_durable_queue_spools_a_batch_before_add_many_returns(tmp_path: Path) -> None:
    from allotment_client.events import EventQueue

    queue = EventQueue(spool=Spool(tmp_path / "q"), durable=True)
    queue.add_many([event(n) for n in range(3)])
    assert queue.wake.is_set() and queue.backlog() == 3
    assert queue.spool is not None
    queue.spool.close()
    assert [e["id"] for e in Spool(tmp_path / "q").pending()] == ["e-0", "e-1", "e-2"]
    with pytest.raises(ValueError):
        EventQueue().add_many([event(0)])
