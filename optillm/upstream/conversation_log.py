"""Conversation logger: one JSON line per proxy request, OptiLLM's record format.

A record holds ``timestamp``, ``request_id``, ``approach``, ``model``, ``client_request``,
``provider_calls`` (every upstream call made for the request, in order of completion),
``final_response``, ``total_duration_ms`` and ``error``. Files are daily:
``<dir>/conversations_YYYY-MM-DD.jsonl`` (UTC dates).

Several gunicorn workers may append to the same file at once: each record is written with a
single ``write`` on an ``O_APPEND`` descriptor under an exclusive ``flock``, so lines are never
interleaved or torn. API keys and bearer tokens are redacted before anything is written.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import re
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
_SECRET_KEYS = re.compile(
    r"^(api[-_]?key|x-api-key|authorization|proxy-authorization|openai[-_]api[-_]key|"
    r"azure[-_]openai[-_]api[-_]key|password|secret|client[-_]secret|access[-_]token|"
    r"refresh[-_]token|optillm[-_]api[-_]key)$", re.IGNORECASE)
_SECRET_TEXT = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]{6,}|\bsk-[A-Za-z0-9_-]{8,}")


def redact(value: Any) -> Any:
    """A copy of ``value`` with secret-named fields and key-shaped strings replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEYS.match(k) and v
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str) and ("sk-" in value or "Bearer" in value):
        return _SECRET_TEXT.sub(lambda m: (m.group(1) or "") + REDACTED, value)
    return value


class ConversationRecord:
    """The record of one request; ``add_call`` may be called from several threads."""

    def __init__(self, logger: ConversationLogger, request_id: str, approach: str | None,
                 model: str | None, client_request: Any):
        self._logger = logger
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._done = False
        self.data: dict[str, Any] = {
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "request_id": request_id, "approach": approach, "model": model,
            "client_request": client_request, "provider_calls": [],
            "final_response": None, "total_duration_ms": None, "error": None}

    def describe(self, *, approach: str, model: str) -> None:
        """Fill in what the request turned out to ask for, once it is parsed."""
        with self._lock:
            self.data["approach"] = approach
            self.data["model"] = model

    def add_call(self, call: dict[str, Any]) -> None:
        """Append one upstream call.

        ``call`` is ``{"provider_request", "response", "duration_ms", "error"}``.
        """
        with self._lock:
            if not self._done:
                self.data["provider_calls"].append(call)

    def finish(self, final_response: Any = None, error: str | None = None) -> None:
        """Close the record and write it (once; later calls do nothing)."""
        with self._lock:
            if self._done:
                return
            self._done = True
            self.data["final_response"] = final_response
            self.data["error"] = error
            self.data["total_duration_ms"] = round((time.monotonic() - self._start) * 1000, 1)
        self._logger.write(self.data)


class ConversationLogger:
    """Writes ``ConversationRecord``s to daily JSONL files under ``directory``."""

    def __init__(self, directory: str):
        self.directory = directory

    def start(self, request_id: str, approach: str | None, model: str | None,
              client_request: Any) -> ConversationRecord:
        return ConversationRecord(self, request_id, approach, model, client_request)

    def path_for(self, when: _dt.datetime | None = None) -> str:
        day = (when or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d")
        return os.path.join(self.directory, f"conversations_{day}.jsonl")

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (redacted) as one line. A failure is logged, never raised: losing
        the log must not fail the user's request."""
        try:
            line = (json.dumps(redact(record), ensure_ascii=False, default=str) + "\n").encode()
            os.makedirs(self.directory, exist_ok=True)
            fd = os.open(self.path_for(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                view = memoryview(line)
                while view:  # a regular-file write is whole in practice; loop to be sure
                    written = os.write(fd, view)
                    view = view[written:]
            finally:
                os.close(fd)  # closing releases the lock
        except Exception:  # noqa: BLE001
            log.exception("could not write conversation log record")


def start_request(logger: Any, request_id: str, client_request: Any) -> Any:
    """``logger.start`` (a ``ConversationLogger`` or one that wraps it) for a front's request
    as received: its body (``model`` read from it when it is an object) or, when it was not
    JSON, its text."""
    model = client_request.get("model") if isinstance(client_request, dict) else None
    return logger.start(request_id, None, model, client_request)

