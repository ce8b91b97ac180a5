"""Serving under gunicorn: the application the ``optillm`` command runs, its hooks and loggers.

``run_gunicorn(settings)`` serves ``create_app(settings)`` with ``settings.workers`` workers of
``settings.worker_class``: ``gthread`` by default (``--max-parallel-calls`` threads, at least
4; a thread serves a keep-alive client's next request itself when it comes within
``LINGER_MS``, ``_thread_worker_class``), which measured lower added latency and more req/s
with two workers than ``gevent`` on these 2 cores (README "Running it"); ``gevent`` is there
for many idle streaming connections, with its imports fixed for monkey-patching
(``_gevent_worker_class``). Settings reach
the workers as the value itself (each worker builds its
app from it after the fork), never through the environment.

Metrics: before any worker starts, ``prepare_metrics_dir`` points ``PROMETHEUS_MULTIPROC_DIR``
at a fresh folder (or empties the one the operator set), so every worker's request metrics
land in files that a scrape on any worker sums; ``child_exit`` marks a dead worker's files,
and the master removes a folder it made when it exits.

Logs: the access log (one line per request: client, time, request line, status, bytes,
milliseconds, ``rid=<X-Request-ID>``) goes to stdout unless ``--no-access-log``; with
``--log-format json`` gunicorn's own lines and the access lines are JSON objects too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from .settings import Settings, export_metrics_dir


def worker_class(requested: str) -> str:
    """``requested`` when it can run here; ``gthread`` when gevent is not installed."""
    if requested == "gevent":
        try:
            import gevent  # noqa: F401
        except ImportError:
            logging.getLogger("optillm").warning(
                "gevent is not installed: serving with gthread (pip install gevent)")
            return "gthread"
    return requested


def prepare_metrics_dir(current: str | None) -> tuple[str, bool]:
    """The folder for multiprocess metrics: ``current`` emptied of old ``*.db`` files, or a new
    temporary one. Returns ``(path, made_here)``."""
    if current:
        os.makedirs(current, exist_ok=True)
        for name in os.listdir(current):
            if name.endswith(".db"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(current, name))
        return current, False
    return tempfile.mkdtemp(prefix="optillm-metrics-"), True


def _gevent_worker_class() -> Any:
    """gunicorn's gevent worker, with the imports that break under monkey-patching done
    first: ``trio`` (imported by httpcore2, under the ``openai`` SDK) builds a class from
    ``select.epoll`` at import time, and gevent's patched ``select`` has no ``epoll``."""
    from gunicorn.workers.ggevent import GeventWorker

    class Worker(GeventWorker):
        def patch(self):
            with contextlib.suppress(ImportError, NotImplementedError):
                import trio  # noqa: F401
            super().patch()

    Worker.__name__ = Worker.__qualname__ = "OptillmGeventWorker"
    return Worker


#: Milliseconds a gthread worker thread waits on a keep-alive connection for its next request
#: before handing the connection back to gunicorn's poller.
LINGER_MS = 2


def _thread_worker_class() -> Any:
    """gunicorn's gthread worker, but a thread that has answered a keep-alive request waits up
    to ``LINGER_MS`` for the same client's next one and serves it itself, while at most half
    the threads are busy (beyond that it behaves as gthread, so a busy worker never leaves a
    request queued behind a waiting thread).

    A client that sends requests back to back (an SDK loop, a load balancer's pooled
    connection) then skips the round trip through the poller, the thread pool and the main
    thread's wake-up pipe: against a 0 ms upstream, a bare Flask relay measured +0.48-0.50 ms
    p50 under gthread and +0.43 ms with this (``scripts/bench_proxy.py`` harness)."""
    import threading

    from gunicorn.workers.gthread import ThreadWorker

    class Worker(ThreadWorker):
        _busy = 0
        _busy_lock = threading.Lock()

        def handle(self, conn):
            with self._busy_lock:
                self._busy += 1
            try:
                result = super().handle(conn)
                while _keeps(result) and self.alive and self._busy * 2 <= self.cfg.threads \
                        and _next_request_soon(conn):
                    result = super().handle(conn)
                return result
            finally:
                with self._busy_lock:
                    self._busy -= 1

    Worker.__name__ = Worker.__qualname__ = "OptillmThreadWorker"
    return Worker


def _keeps(result: Any) -> bool:
    """Whether gthread's ``handle`` kept the connection alive (a bool from gunicorn 25 on,
    ``(keepalive, conn)`` before)."""
    if isinstance(result, tuple):
        return result[:1] == (True,)
    return result is True


def _next_request_soon(conn: Any) -> bool:
    """True when the connection has (or within ``LINGER_MS`` gets) bytes of a next request."""
    from .upstream.http_pool import readable

    try:
        if conn.parser.unreader.buf.getvalue():
            return True
        sock = conn.sock
        if getattr(sock, "pending", lambda: 0)():  # TLS bytes already decrypted
            return True
        return readable(sock, LINGER_MS)
    except (AttributeError, OSError, ValueError):
        return False


def _logger_class(json_lines: bool) -> Any:
    """gunicorn's logger with a lean access line (gunicorn's own builds a dict of every
    header per request: about 0.15 ms on these cores) and, with ``json_lines``, JSON lines
    for its own messages and the access log alike."""
    from gunicorn import glogging

    from .web.request_context import RequestIdFilter, json_formatter

    class Logger(glogging.Logger):
        _stamp: tuple[int, str] = (0, "")

        def now(self) -> str:
            """gunicorn's ``[day/Mon/year:H:M:S zone]``, formatted once a second."""
            second = int(time.time())
            stamp = self._stamp
            if stamp[0] != second:
                stamp = self._stamp = (second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]",
                                                             time.localtime(second)))
            return stamp[1]

        def setup(self, cfg):
            super().setup(cfg)
            if json_lines:
                for handler in self.error_log.handlers:
                    handler.setFormatter(json_formatter())
                    handler.addFilter(RequestIdFilter())

        def access(self, resp, req, environ, request_time):
            if not self.cfg.accesslog:
                return
            try:
                status = resp.status
                status = int(status.split(None, 1)[0] if isinstance(status, str) else status)
                rid = next((v for k, v in resp.headers if k.lower() == "x-request-id"), "-")
                ms = request_time.total_seconds() * 1000
                if json_lines:
                    line = json.dumps({
                        "time": self.now(), "level": "INFO", "logger": "gunicorn.access",
                        "remote": environ.get("REMOTE_ADDR", "-"),
                        "method": environ.get("REQUEST_METHOD"),
                        "path": environ.get("PATH_INFO"),
                        "query": environ.get("QUERY_STRING") or None, "status": status,
                        "bytes": getattr(resp, "sent", None), "duration_ms": round(ms, 3),
                        "user_agent": environ.get("HTTP_USER_AGENT"), "request_id": rid})
                else:
                    line = (f'{environ.get("REMOTE_ADDR", "-")} {self.now()} '
                            f'"{environ.get("REQUEST_METHOD")} {environ.get("RAW_URI")} '
                            f'{environ.get("SERVER_PROTOCOL")}" {status} '
                            f'{getattr(resp, "sent", "-")} {ms:.2f}ms rid={rid}')
                _write_access(self.access_log, line)
            except Exception:  # noqa: BLE001 - as gunicorn's own access(): never fail a request
                self.error("failed to write an access line")

    Logger.__name__ = Logger.__qualname__ = "OptillmLogger"
    return Logger


def _write_access(logger: logging.Logger, line: str) -> None:
    """``logger.info(line)``, but straight to the stream of a plain stream or file handler
    (gunicorn's ``-`` and ``--access-logfile``): no ``LogRecord`` or formatting for a line
    that is already whole, about 10 µs a request. Other handlers (syslog, ...) get the
    record as usual."""
    handlers = logger.handlers
    if not handlers or not logger.isEnabledFor(logging.INFO) or \
            not all(type(h) in (logging.StreamHandler, logging.FileHandler) for h in handlers):
        logger.info(line)
        return
    for handler in handlers:
        with handler.lock:
            handler.stream.write(line + handler.terminator)
            handler.stream.flush()


class StartupError(RuntimeError):
    """A worker could not build the app (a plugin, the config, the store); the message is the
    one line the worker reported."""


def run_gunicorn(settings: Settings) -> None:
    """Serve until the master is stopped (SIGTERM: graceful; SIGINT: quick).

    Raises:
        StartupError: a worker failed to build the app (PluginLoadError, ConfigError,
            StoreError, LocalModelUnavailable, OSError); the master has stopped.
        SystemExit: gunicorn halted for another reason.
    """
    from gunicorn.app.base import BaseApplication

    kind = worker_class(settings.worker_class)
    metrics_dir, made = prepare_metrics_dir(settings.metrics_dir)
    export_metrics_dir(metrics_dir)  # read by prometheus-client on import, in every worker
    settings = settings.replace(metrics_dir=metrics_dir, worker_class=kind)

    def child_exit(server, worker) -> None:
        try:
            from prometheus_client import multiprocess
        except ImportError:
            return
        multiprocess.mark_process_dead(worker.pid, metrics_dir)

    def on_exit(server) -> None:
        if made:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    class _App(BaseApplication):
        def load_config(self):
            cfg = self.cfg
            cfg.set("bind", f"{settings.host}:{settings.port}")
            cfg.set("workers", settings.workers)
            cfg.set("worker_class", _gevent_worker_class() if kind == "gevent"
                    else _thread_worker_class() if kind == "gthread" else kind)
            if kind == "gthread":
                cfg.set("threads", max(4, settings.max_parallel_calls))
            cfg.set("timeout", int(settings.upstream_timeout) + 30)
            cfg.set("graceful_timeout", 10)
            cfg.set("keepalive", 5)
            cfg.set("loglevel", settings.log)
            cfg.set("child_exit", child_exit)
            cfg.set("on_exit", on_exit)
            if settings.access_log:
                cfg.set("accesslog", "-")
            cfg.set("logger_class", _logger_class(settings.log_format == "json"))
            if "control_socket_disable" in cfg.settings:
                # gunicorn >= 23 shares ~/.gunicorn/gunicorn.ctl between instances, and one
                # instance's start or exit removes another's socket
                cfg.set("control_socket_disable", True)

        def load(self):
            from .app import create_app
            from .plan.loader import PluginLoadError
            from .upstream.config import ConfigError
            from .upstream.local_model import LocalModelUnavailable
            from .upstream.store import StoreError

            try:
                return create_app(settings)
            except (PluginLoadError, ConfigError, StoreError, LocalModelUnavailable,
                    OSError) as exc:  # one line for the master to print, no trace
                from gunicorn.errors import AppImportError

                with open(error_path, "w") as fh:
                    fh.write(str(exc))
                raise AppImportError(str(exc)) from None  # the master halts: no respawns

    fd, error_path = tempfile.mkstemp(prefix="optillm-startup-")
    os.close(fd)
    master = os.getpid()
    try:
        _App().run()
    except SystemExit:
        if os.getpid() != master:  # a forked worker leaving through these frames
            raise
        with open(error_path) as fh:
            message = fh.read().strip()
        if message:
            raise StartupError(message) from None
        raise
    finally:
        if os.getpid() == master:
            with contextlib.suppress(OSError):
                os.unlink(error_path)
