"""A durable file spool of usage events: what was appended survives the process (a restart,
SIGKILL, a power cut after the fsync) until the service has acknowledged it.

    spool = Spool(directory)              one process at a time (a lock file), else SpoolLocked
    spool.append(events)                  written and fsync'ed before it returns
    spool.pending(limit=None)             the events not yet acknowledged, oldest first
    spool.acknowledge(keys)               (source, id) pairs the service has taken
    len(spool), spool.close()

The file, `events.log`, is append-only, one record a line: `<crc32 hex> <json>\\n`, the JSON
either `{"e": event}` or `{"a": [[source, id], ...]}` (acknowledged). Opening it replays the
records; a torn last record (the process died mid-write) or one whose checksum does not
match is skipped, and a torn tail is cut off so the next append starts on a clean line.
Once everything is acknowledged the file is truncated; with many acknowledged records
left in it, it is rewritten (to a temporary file, fsync, rename) with the pending ones only.
An event is known by its CloudEvents identity, (source, id): appending one already pending
keeps the first copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

LOG = "events.log"
LOCK = "spool.lock"
COMPACT_AFTER = 10_000  # acknowledged records kept before a rewrite

Key = tuple[str, str]


class SpoolLocked(RuntimeError):
    """Another process holds this spool."""


def event_key(event: Mapping[str, Any]) -> Key:
    """An event's identity for the service: (source, id)."""
    return (str(event.get("source", "")), str(event.get("id", "")))


def _line(record: Mapping[str, Any]) -> bytes:
    payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _parse(line: bytes) -> dict[str, Any] | None:
    head, _, payload = line.partition(b" ")
    try:
        if len(head) != 8 or int(head, 16) != zlib.crc32(payload):
            return None
        record = json.loads(payload)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class Spool:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lock_file = open(self.directory / LOCK, "a")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise SpoolLocked(f"{self.directory} is in use by another process") from None
        self.path = self.directory / LOG
        self._pending: dict[Key, dict[str, Any]] = {}
        self._acknowledged_records = 0
        self._replay()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _replay(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # past the last complete line; the rest is torn
        for line in data[:end].splitlines():
            record = _parse(line)
            if record is None:
                continue
            if "e" in record and isinstance(record["e"], dict):
                self._pending.setdefault(event_key(record["e"]), record["e"])
            elif "a" in record and isinstance(record["a"], list):
                for pair in record["a"]:
                    if isinstance(pair, list) and len(pair) == 2:
                        self._pending.pop((str(pair[0]), str(pair[1])), None)
                self._acknowledged_records += 1
        if end < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())

    def __len__(self) -> int:
        return len(self._pending)

    def append(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Write `events` durably: on disk (fsync) when this returns."""
        with self._lock:
            fresh = [dict(e) for e in events if event_key(e) not in self._pending]
            if not fresh:
                return
            self._write(b"".join(_line({"e": event}) for event in fresh))
            for event in fresh:
                self._pending[event_key(event)] = event

    def pending(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            events = iter(self._pending.values())
            if limit is None:
                return list(events)
            return [event for _, event in zip(range(limit), events, strict=False)]

    def acknowledge(self, keys: Iterable[Key]) -> None:
        """The service took these events (accepted, duplicates, or refused for good)."""
        with self._lock:
            taken = [key for key in keys if key in self._pending]
            if not taken:
                return
            for key in taken:
                del self._pending[key]
            if not self._pending:
                os.ftruncate(self._fd, 0)
                os.fsync(self._fd)
                self._acknowledged_records = 0
                return
            self._write(_line({"a": [list(key) for key in taken]}))
            self._acknowledged_records += 1
            if self._acknowledged_records > COMPACT_AFTER:
                self._rewrite()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def _rewrite(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "wb") as handle:
            handle.write(b"".join(_line({"e": event}) for event in self._pending.values()))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._acknowledged_records = 0

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
