"""Conversation records for the web face: the traced-requests ring and the log files' tail.

The playground shows every upstream call an approach made from the request's conversation
record (``optillm.upstream.conversation_log``). Records exist only where someone asked:

- with ``--log-conversations`` every request has one, written to the daily JSONL files
  (shared by all workers); ``read_log`` reads them back newest first;
- a request that sends ``X-Optillm-Trace: 1`` (the playground's do) has one even with logging
  off, kept in a small bounded ring in this process's memory (``RecentRecords``, 64 records by
  default; oldest dropped first) and, by request id, in the app's shared store (Redis, else
  the on-disk store) for ``TRACE_TTL`` seconds, so ``find`` answers from any worker. Requests
  without the header and without logging pay nothing but one header lookup, so the hot
  passthrough path stays as it is. The list of recent records (``recent``) is the log files'
  with logging on, else this worker's ring.

``TracingLogger`` is what the app keeps as ``services.conversation_logger``: its ``start``
returns a ``ConversationRecord`` when the request is logged or traced, else None (the routes
treat a None record as "not recorded"). Records in the ring are redacted copies, as on disk.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..upstream.conversation_log import ConversationLogger, ConversationRecord, redact

#: How many bytes of log files one look-up may read from their ends (newest first).
MAX_SCAN_BYTES = 64 * 1024 * 1024
_BLOCK = 1 << 16
#: Seconds a traced record stays in the shared store.
TRACE_TTL = 3600.0
_PREFIX = "trace:"

log = logging.getLogger(__name__)


class RecentRecords:
    """A bounded, thread-safe ring of finished records (redacted dicts)."""

    def __init__(self, size: int = 64):
        self._items: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(record)

    def get(self, request_id: str) -> dict[str, Any] | None:
        """The newest record with ``request_id``, else None."""
        with self._lock:
            for record in reversed(self._items):
                if record.get("request_id") == request_id:
                    return record
        return None

    def latest(self) -> list[dict[str, Any]]:
        """Every record, newest first."""
        with self._lock:
            return list(reversed(self._items))

    def __len__(self) -> int:
        return len(self._items)


class _Sink:
    """Where one record goes when it finishes: the log files; for a traced request also the
    ring and the shared store (``store`` None: not traced). A store failure is logged, never
    raised: the answer has gone out already."""

    def __init__(self, files: ConversationLogger | None, ring: RecentRecords | None,
                 store: Any = None):
        self.files = files
        self.ring = ring
        self.store = store

    def write(self, data: dict[str, Any]) -> None:
        if self.ring is not None:
            record = redact(data)
            self.ring.add(record)
            if self.store is not None:
                try:
                    self.store.set(_PREFIX + str(record.get("request_id")),
                                   json.dumps(record, default=str).encode(), TRACE_TTL)
                except Exception as exc:  # noqa: BLE001 - Redis, disk, a missing package
                    log.warning("traced record not shared: %s: %s", type(exc).__name__, exc)
        if self.files is not None:
            self.files.write(data)


class TracingLogger:
    """The app's conversation logger: ``files`` (None when logging is off) plus ``ring`` for
    the requests ``wants_trace()`` says asked for a trace (read in the request's context),
    which also go to ``store`` (a ``KVStore``; None: this process only)."""

    def __init__(self, files: ConversationLogger | None, ring: RecentRecords,
                 wants_trace: Callable[[], bool], store: Any = None):
        self.files = files
        self.ring = ring
        self.wants_trace = wants_trace
        self.store = store

    @property
    def directory(self) -> str | None:
        return self.files.directory if self.files is not None else None

    def start(self, request_id: str, approach: str | None, model: str | None,
              client_request: Any) -> ConversationRecord | None:
        """A record for this request, or None when it is neither logged nor traced."""
        traced = self.wants_trace()
        if self.files is None and not traced:
            return None
        sink = _Sink(self.files, self.ring if traced else None, self.store)
        return ConversationRecord(sink, request_id, approach, model,  # type: ignore[arg-type]
                                  client_request)

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The record of ``request_id``: the ring first, then the shared store, then the log
        files (newest first, at most ``MAX_SCAN_BYTES``). None when none has it (yet)."""
        found = self.ring.get(request_id)
        if found is None and self.store is not None:
            try:
                raw = self.store.get(_PREFIX + request_id)
                found = json.loads(raw) if raw else None
            except Exception as exc:  # noqa: BLE001 - fall through to the files
                log.warning("shared traces unreadable: %s: %s", type(exc).__name__, exc)
        if found is None and self.files is not None:
            needle = json.dumps(request_id).encode()
            for record in read_log(self.files.directory, needle=needle):
                if record.get("request_id") == request_id:
                    return record
        return found

    def recent(self, limit: int, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Up to ``limit`` records that ``keep`` accepts, newest first: the log files' when
        logging is on (they hold the traced requests too), else the ring's."""
        source: Iterator[dict[str, Any]] | list[dict[str, Any]]
        source = read_log(self.files.directory) if self.files is not None \
            else self.ring.latest()
        out = []
        for record in source:
            if keep(record):
                out.append(record)
                if len(out) >= limit:
                    break
        return out


def _lines_backwards(path: str, budget: list[int]) -> Iterator[bytes]:
    """The lines of ``path``, last first; reading stops when ``budget[0]`` bytes are spent."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pos = fh.tell()
        rest = b""
        while pos > 0 and budget[0] > 0:
            size = min(_BLOCK, pos)
            pos -= size
            fh.seek(pos)
            block = fh.read(size) + rest
            budget[0] -= size
            lines = block.split(b"\n")
            rest = lines.pop(0)
            for line in reversed(lines):
                if line.strip():
                    yield line
        if pos == 0 and rest.strip():
            yield rest


def read_log(directory: str, *, needle: bytes | None = None,
             max_bytes: int = MAX_SCAN_BYTES) -> Iterator[dict[str, Any]]:
    """The records of ``<directory>/conversations_*.jsonl``, newest first (files by date,
    lines from the end). ``needle``: only lines containing these bytes are parsed. A line
    that is not JSON (a torn write) is skipped."""
    budget = [max_bytes]
    for path in sorted(glob.glob(os.path.join(directory, "conversations_*.jsonl")),
                       reverse=True):
        try:
            for line in _lines_backwards(path, budget):
                if needle is not None and needle not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record
        except OSError:
            continue
        if budget[0] <= 0:
            return
