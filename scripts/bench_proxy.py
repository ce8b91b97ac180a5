"""Benchmark the proxy against the stub upstream (``scripts/stub_upstream.py``) on loopback.

One run first measures the ``optillm`` command as a user starts it (``SERVING_COMMANDS``: the
default, one gthread worker, and ``--workers 2``; ``--compare-worker-classes`` adds each with
``--worker-class gevent``) over a 0 ms stub: interleaved passthrough latency against the stub
(added p50/p95) and req/s at 1/8/32 clients, next to the direct figures. Then it starts a stub
upstream (0 ms latency) and the proxy under gunicorn directly (``-w 2 -k gthread --threads
16``, ``OPTILLM_BASE_URL`` pointing at the stub), and measures:

1. passthrough latency: sequential non-streamed requests, directly to the stub and through the
   proxy, interleaved, each side over one keep-alive connection (p50/p95 and the difference),
   and the time to first byte of streamed passthrough;
2. throughput at 1, 8 and 32 concurrent clients (threads, one keep-alive connection each),
   directly and through the proxy, with the proxy's CPU time per request (from ``/proc``);
3. approach wall time: a second stub with 300 ms latency and a proxy over it; a passthrough
   call vs ``bon-``, ``moa-`` and ``self_consistency-stub-model`` (median, ratio to the
   passthrough, upstream calls and peak concurrent upstream calls counted at the stub).

It prints markdown tables (progress goes to stderr), stops everything it started (also on
Ctrl-C, SIGTERM or its own time limit) and exits 1 if any request failed. Traffic goes to
127.0.0.1 only. ``--quick`` runs a shorter version.

    python scripts/bench_proxy.py [--quick] [--seconds S] [--requests N] [--serving-only]
        [--compare-worker-classes]

Run it alone (``flock /tmp/optillm-model.lock``): other load on the 2 cores inflates every
figure.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stub_upstream  # noqa: E402 - lives next to this script

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
GUNICORN = ["-w", "2", "-k", "gthread", "--threads", "16"]
APPROACH_MODELS = ["stub-model", "bon-stub-model", "moa-stub-model",
                   "self_consistency-stub-model"]
#: ``--all-approaches``: every built-in approach (model-name form), for docs/approaches.md.
ALL_APPROACH_MODELS = APPROACH_MODELS + [
    f"{slug}-stub-model" for slug in (
        "re2", "cot_reflection", "majority_voting", "genselect", "council", "mcts", "rstar",
        "pvg", "z3", "rto", "plansearch", "leap", "cepo", "mars", "deepconf")] + [
    "stub-model-wait-3", "re2&moa-stub-model", "bon|moa-stub-model"]
THROUGHPUT_CLIENTS = (1, 8, 32)
DIRECT_LABEL = "stub-model, direct to the stub"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def chat_body(model: str = "stub-model", stream: bool = False) -> bytes:
    body: dict = {"model": model, "messages": [{"role": "user", "content": "What is 6 x 7?"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0-100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# -- errors -----------------------------------------------------------------------------------


@dataclass
class ErrorLog:
    """Failed requests across the run (thread-safe); the first few are kept for the report."""

    count: int = 0
    samples: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, where: str, what: str) -> None:
        with self._lock:
            self.count += 1
            if len(self.samples) < 5:
                self.samples.append(f"{where}: {what[:300]}")


# -- client -----------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection (``http.client``) to ``base_url``.

    A connection the server closed while idle is reopened once (counted in ``reopened``);
    any other failure raises.
    """

    def __init__(self, base_url: str, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(base_url)
        self.prefix = parts.path.rstrip("/")
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.reopened = 0
        self._used = False

    def _send(self, method: str, path: str, body: bytes | None) -> http.client.HTTPResponse:
        for attempt in (0, 1):
            try:
                self.conn.request(method, self.prefix + path, body, HEADERS)
                resp = self.conn.getresponse()
                self._used = True
                return resp
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt or not self._used:
                    raise
                self.reopened += 1
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        resp = self._send(method, path, body)
        return resp.status, resp.read()

    def first_byte(self, path: str, body: bytes) -> tuple[int, float, bytes]:
        """POST a streamed request: status, seconds to the first body bytes, the whole body."""
        start = time.perf_counter()
        resp = self._send("POST", path, body)
        first = resp.read1(65536) if resp.status == 200 else b""
        ttfb = time.perf_counter() - start
        return resp.status, ttfb, first + resp.read()

    def close(self) -> None:
        self.conn.close()


def check_completion(status: int, data: bytes) -> str | None:
    """Why a non-streamed answer is wrong, or None when it is a chat completion."""
    if status != 200:
        return f"status {status}: {data[:200]!r}"
    try:
        body = json.loads(data)
    except ValueError:
        return f"invalid JSON: {data[:200]!r}"
    if not body.get("choices"):
        return f"no choices: {data[:200]!r}"
    return None


def check_stream(status: int, data: bytes) -> str | None:
    if status != 200:
        return f"status {status}: {data[:200]!r}"
    if not data.rstrip().endswith(b"data: [DONE]"):
        return f"stream did not end with [DONE]: {data[-200:]!r}"
    return None


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_env(stub_url: str) -> dict[str, str]:
    """This environment without OpenAI/Azure/OptiLLM/proxy settings, plus the benchmark's."""
    dropped = ("OPTILLM_", "OPENAI_", "AZURE_")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(dropped) and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy")}
    env.update(OPTILLM_BASE_URL=stub_url, OPENAI_API_KEY="sk-bench", OPTILLM_LOG="warning",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (Linux ``/proc``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine so far (Linux ``/proc/stat``)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Cores the whole machine kept busy between two ``host_busy_jiffies`` samples."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def child_pids(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(entry.name))
    return out


@dataclass
class Proxy:
    """A gunicorn-served proxy started by this script; its output goes to ``log_path``."""

    url: str
    proc: subprocess.Popen
    log_path: str

    def cpu_seconds(self) -> float | None:
        """CPU time of the master and its workers so far (None where ``/proc`` is missing)."""
        try:
            return sum(process_cpu_seconds(p) for p in [self.proc.pid, *child_pids(self.proc.pid)])
        except (OSError, ValueError, IndexError):
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Quick shutdown (SIGINT to the master), SIGKILL after 8 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


def private_control_socket() -> list[str]:
    """gunicorn 23.1+ opens a control socket at one shared path (``~/.gunicorn/gunicorn.ctl``);
    two proxies (or another gunicorn on the machine) would fight over it, so it is turned off."""
    from gunicorn.config import Config

    return ["--no-control-socket"] if "control_socket_disable" in Config().settings else []


def start_proxy(stub_url: str, timeout: float = 30.0) -> Proxy:
    """gunicorn over ``stub_url``; returns once ``/health`` answers.

    Raises: RuntimeError (with the proxy's log) when it exits or is not healthy in time.
    """
    return start_gunicorn(proxy_env(stub_url), timeout)


def start_gunicorn(env: dict[str, str], timeout: float = 30.0,
                   log_prefix: str = "bench-proxy-") -> Proxy:
    """The proxy under gunicorn (``GUNICORN``) with the environment ``env``; returns once
    ``/health`` answers.

    Raises: RuntimeError (with the proxy's log) when it exits or is not healthy in time.
    """
    port = free_port()
    fd, log_path = tempfile.mkstemp(prefix=log_prefix, suffix=".log")
    cmd = [sys.executable, "-m", "gunicorn", *GUNICORN, "-b", f"127.0.0.1:{port}",
           "--graceful-timeout", "3", *private_control_socket(), "optillm.app:create_app()"]
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proxy = Proxy(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        with contextlib.suppress(OSError, http.client.HTTPException), contextlib.closing(conn):
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proxy
        time.sleep(0.1)
    tail = proxy.log_tail()
    proxy.stop()
    raise RuntimeError(f"proxy did not become healthy (exit code {proc.poll()}):\n{tail}")


# -- measurements -----------------------------------------------------------------------------


def timed_call(conn: Connection, body: bytes, stream: bool) -> tuple[float, str | None]:
    """Seconds for one chat request (to the first byte when ``stream``) and what went wrong."""
    try:
        if stream:
            status, elapsed, data = conn.first_byte("/chat/completions", body)
            return elapsed, check_stream(status, data)
        start = time.perf_counter()
        status, data = conn.request("POST", "/chat/completions", body)
        return time.perf_counter() - start, check_completion(status, data)
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return 0.0, f"{type(exc).__name__}: {exc}"


@dataclass
class LatencySample:
    """Seconds per request, direct and through the proxy; requests each side sent (warm-up
    included) and the connections the direct side opened to the stub."""

    direct: list[float] = field(default_factory=list)
    proxy: list[float] = field(default_factory=list)
    sent: int = 0
    direct_connections: int = 1


def measure_latency(direct_url: str, proxy_url: str, n: int, errors: ErrorLog,
                    stream: bool = False, warmup: int = 20) -> LatencySample:
    """Seconds per request (or to the first byte, when ``stream``), direct and via the proxy,
    interleaved in alternating order after ``warmup`` untimed requests per side."""
    conns = {"direct": Connection(direct_url), "proxy": Connection(proxy_url)}
    sample = LatencySample()
    body = chat_body(stream=stream)
    order = ["direct", "proxy"]
    try:
        for i in range(n + warmup):
            for side in (order if i % 2 == 0 else order[::-1]):
                elapsed, problem = timed_call(conns[side], body, stream)
                if problem:
                    errors.add(f"{side} {'stream' if stream else 'latency'}", problem)
                elif i >= warmup:
                    getattr(sample, side).append(elapsed)
            sample.sent += 1
    finally:
        for conn in conns.values():
            conn.close()
    sample.direct_connections += conns["direct"].reopened
    return sample


@dataclass
class Throughput:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    cpu_ms_per_request: float | None = None
    host_busy_cores: float | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def measure_throughput(base_url: str, clients: int, seconds: float, errors: ErrorLog,
                       label: str) -> Throughput:
    """``clients`` threads, each sending requests back to back over its own connection."""
    body = chat_body()
    barrier = threading.Barrier(clients + 1)
    start_at: list[float] = []
    results: list[tuple[int, int, list[float]]] = []
    lock = threading.Lock()

    def client() -> None:
        conn = Connection(base_url)
        ok = failed = 0
        lat: list[float] = []
        barrier.wait()
        deadline = start_at[0] + seconds
        try:
            while (now := time.perf_counter()) < deadline:
                try:
                    status, data = conn.request("POST", "/chat/completions", body)
                    problem = None if status == 200 else f"status {status}: {data[:200]!r}"
                except (OSError, http.client.HTTPException) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    conn.close()
                    conn = Connection(base_url)
                if problem:
                    failed += 1
                    errors.add(f"{label} x{clients}", problem)
                else:
                    ok += 1
                    lat.append(time.perf_counter() - now)
        finally:
            conn.close()
            with lock:
                results.append((ok, failed, lat))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start_at.append(time.perf_counter())
    barrier.wait()
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.perf_counter() - start_at[0]
    latencies = [x for _, _, lat in results for x in lat]
    return Throughput(requests=sum(r[0] for r in results), errors=sum(r[1] for r in results),
                      seconds=elapsed,
                      p50_ms=percentile(latencies, 50) * 1000 if latencies else float("nan"))


def measure_throughput_table(direct_url: str, proxy: Proxy, seconds: float,
                             errors: ErrorLog) -> list[tuple[int, str, Throughput]]:
    rows = []
    for clients in THROUGHPUT_CLIENTS:
        for label, url in (("direct", direct_url), ("proxy", proxy.url)):
            log(f"  throughput: {clients} clients, {label}, {seconds:g} s")
            cpu_before = proxy.cpu_seconds() if label == "proxy" else None
            host_before = host_busy_jiffies()
            result = measure_throughput(url, clients, seconds, errors, label)
            result.host_busy_cores = busy_cores(host_before, host_busy_jiffies())
            cpu_after = proxy.cpu_seconds() if label == "proxy" else None
            if cpu_before is not None and cpu_after is not None and result.requests:
                result.cpu_ms_per_request = (cpu_after - cpu_before) * 1000 / result.requests
            rows.append((clients, label, result))
    return rows


@dataclass
class ApproachResult:
    model: str
    wall_s: list[float]
    upstream_calls: list[int]
    peak_parallel: list[int]


def measure_approaches(stub: stub_upstream.StubHandle, proxy_url: str, reps: int,
                       errors: ErrorLog, models: list[str] | None = None
                       ) -> list[ApproachResult]:
    """Wall time of a call straight to the stub, then of each model in ``APPROACH_MODELS``
    through the proxy (one warm-up call each, not counted), with the upstream calls each
    request made, counted at the stub."""
    proxy_conn = Connection(proxy_url, timeout=60)
    direct_conn = Connection(stub.url, timeout=60)
    targets = [(DIRECT_LABEL, "stub-model", direct_conn)] + \
        [(model, model, proxy_conn) for model in (models or APPROACH_MODELS)]
    results = []
    try:
        for label, model, conn in targets:
            log(f"  approaches: {label} x{reps}")
            result = ApproachResult(label, [], [], [])
            for i in range(reps + 1):
                stub.reset()
                elapsed, problem = timed_call(conn, chat_body(model), stream=False)
                if problem:
                    errors.add(model, problem)
                    continue
                if i == 0:
                    continue  # warm-up: connections, capability probes
                stats = stub.stats()
                result.wall_s.append(elapsed)
                result.upstream_calls.append(stats["chat_calls"])
                result.peak_parallel.append(stats["peak_active"])
            results.append(result)
    finally:
        proxy_conn.close()
        direct_conn.close()
    return results


# -- report -----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def print_latency(plain: LatencySample, streamed: LatencySample,
                  upstream_connections: int) -> None:
    print(f"\n### Passthrough latency ({len(plain.direct)} sequential requests per side, "
          f"interleaved, one keep-alive connection each)\n")
    print("| measure | direct p50 ms | proxy p50 ms | added p50 ms "
          "| direct p95 ms | proxy p95 ms | added p95 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, times in (("non-streamed, whole reply", plain),
                        ("streamed, first byte", streamed)):
        d, p = times.direct, times.proxy
        if not d or not p:
            print(f"| {name} | - | - | - | - | - | - |")
            continue
        d50, p50, d95, p95 = (percentile(d, 50), percentile(p, 50), percentile(d, 95),
                              percentile(p, 95))
        print(f"| {name} | {ms(d50)} | {ms(p50)} | **{ms(p50 - d50)}** | {ms(d95)} "
              f"| {ms(p95)} | {ms(p95 - d95)} |")
    print(f"\nUpstream connections the proxy opened for its {plain.sent + streamed.sent} "
          f"requests: {upstream_connections} (a pooling proxy opens one per busy worker).")


def print_throughput(rows: list[tuple[int, str, Throughput]], seconds: float) -> None:
    print(f"\n### Throughput ({seconds:g} s per row, one keep-alive connection per client)\n")
    print("| clients | target | req/s | errors | p50 ms | proxy CPU ms/req "
          "| machine busy cores |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for clients, label, r in rows:
        cpu = f"{r.cpu_ms_per_request:.2f}" if r.cpu_ms_per_request is not None else "-"
        busy = f"{r.host_busy_cores:.2f}/{os.cpu_count()}" if r.host_busy_cores is not None \
            else "-"
        print(f"| {clients} | {label} | {r.rate:,.0f} | {r.errors} | {r.p50_ms:.2f} | {cpu} "
              f"| {busy} |")


def print_approaches(results: list[ApproachResult], latency_ms: float) -> None:
    print(f"\n### Approaches through the proxy over a {latency_ms:g} ms upstream "
          f"(median of {max((len(r.wall_s) for r in results), default=0)})\n")
    print("| model | wall ms | x single passthrough | upstream calls | peak parallel calls |")
    print("|---|---:|---:|---:|---:|")
    through_proxy = [r for r in results if r.model == APPROACH_MODELS[0]]
    single = statistics.median(through_proxy[0].wall_s) \
        if through_proxy and through_proxy[0].wall_s else None
    for r in results:
        label = r.model.replace("|", "\\|")  # a parallel plan's bar, inside a table cell
        if not r.wall_s:
            print(f"| {label} | failed | - | - | - |")
            continue
        wall = statistics.median(r.wall_s)
        ratio = f"{wall / single:.2f}" if single else "-"
        calls = "/".join(str(c) for c in sorted(set(r.upstream_calls)))
        peak = "/".join(str(c) for c in sorted(set(r.peak_parallel)))
        print(f"| {label} | {wall * 1000:.0f} | {ratio} | {calls} | {peak} |")


# -- the optillm command as served ---------------------------------------------------------

#: ``optillm`` command lines the serving phase measures (label, extra flags).
SERVING_COMMANDS = [("optillm", []), ("optillm --workers 2", ["--workers", "2"])]


def start_cli(stub_url: str, flags: list[str], timeout: float = 30.0) -> Proxy:
    """``python -m optillm --base-url <stub> --port <free> <flags>`` (the command as a user
    runs it, access log included); returns once ``/health`` answers.

    Raises: RuntimeError (with its log) when it exits or is not healthy in time.
    """
    port = free_port()
    fd, log_path = tempfile.mkstemp(prefix="bench-cli-", suffix=".log")
    cmd = [sys.executable, "-m", "optillm", "--base-url", stub_url, "--port", str(port),
           *flags]
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=proxy_env(stub_url), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proxy = Proxy(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        with contextlib.suppress(OSError, http.client.HTTPException), contextlib.closing(conn):
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proxy
        time.sleep(0.1)
    tail = proxy.log_tail()
    proxy.stop()
    raise RuntimeError(f"optillm {' '.join(flags)} did not become healthy "
                       f"(exit code {proc.poll()}):\n{tail}")


@dataclass
class ServingRow:
    """One served command's figures: added latency (ms) and req/s per client count."""

    label: str
    added_p50_ms: float
    added_p95_ms: float
    rates: dict[int, float]
    cpu_ms: dict[int, float | None]


def measure_serving(stub: stub_upstream.StubHandle, label: str, flags: list[str],
                    args: argparse.Namespace, errors: ErrorLog,
                    stack: contextlib.ExitStack) -> ServingRow:
    """Start ``optillm <flags>`` over ``stub``: interleaved latency against the stub, then
    throughput at ``THROUGHPUT_CLIENTS``; stops it."""
    log(f"serving: {label} ...")
    proxy = start_cli(stub.url, flags)
    stack.callback(proxy.stop)
    try:
        sample = measure_latency(stub.url, proxy.url + "/v1", args.requests, errors)
        d, p = sample.direct, sample.proxy
        added50 = percentile(p, 50) - percentile(d, 50) if d and p else float("nan")
        added95 = percentile(p, 95) - percentile(d, 95) if d and p else float("nan")
        rates: dict[int, float] = {}
        cpu: dict[int, float | None] = {}
        for clients in THROUGHPUT_CLIENTS:
            log(f"  throughput: {clients} clients, {label}, {args.seconds:g} s")
            before = proxy.cpu_seconds()
            result = measure_throughput(proxy.url + "/v1", clients, args.seconds, errors, label)
            after = proxy.cpu_seconds()
            rates[clients] = result.rate
            cpu[clients] = (after - before) * 1000 / result.requests \
                if before is not None and after is not None and result.requests else None
    finally:
        proxy.stop()
    return ServingRow(label, added50 * 1000, added95 * 1000, rates, cpu)


def print_serving(rows: list[ServingRow], direct: dict[int, float],
                  direct_p50_ms: float) -> None:
    print(f"\n### The optillm command as served ({THROUGHPUT_CLIENTS} clients; direct to the "
          f"stub: p50 {direct_p50_ms:.3f} ms, "
          f"{' / '.join(f'{direct[c]:,.0f}' for c in THROUGHPUT_CLIENTS)} req/s)\n")
    heads = " | ".join(f"req/s at {c} (direct)" for c in THROUGHPUT_CLIENTS)
    print(f"| command | added p50 ms | added p95 ms | {heads} | CPU ms/req at 32 |")
    print("|---|---:|---:|" + "---:|" * len(THROUGHPUT_CLIENTS) + "---:|")
    for r in rows:
        rates = " | ".join(f"{r.rates[c]:,.0f} ({direct[c]:,.0f})" for c in THROUGHPUT_CLIENTS)
        cpu = r.cpu_ms.get(THROUGHPUT_CLIENTS[-1])
        print(f"| `{r.label}` | **{r.added_p50_ms:.3f}** | {r.added_p95_ms:.3f} | {rates} "
              f"| {f'{cpu:.2f}' if cpu is not None else '-'} |")


def run_serving(args: argparse.Namespace, stack: contextlib.ExitStack,
                errors: ErrorLog) -> None:
    """The serving phase: ``SERVING_COMMANDS`` (plus ``--worker-class gevent`` variants
    with ``--compare-worker-classes``) against one 0 ms stub, next to the direct figures."""
    log("serving phase: a 0 ms stub, the optillm command over it...")
    stub = stack.enter_context(stub_upstream.start_subprocess(latency_ms=0))
    commands = list(SERVING_COMMANDS)
    if args.compare_worker_classes:
        commands += [(f"{label} --worker-class gevent", flags + ["--worker-class", "gevent"])
                     for label, flags in SERVING_COMMANDS]
    direct: dict[int, float] = {}
    for clients in THROUGHPUT_CLIENTS:
        log(f"  throughput: {clients} clients, direct, {args.seconds:g} s")
        direct[clients] = measure_throughput(stub.url, clients, args.seconds, errors,
                                             "direct").rate
    base = measure_latency(stub.url, stub.url, max(50, args.requests // 3), errors)
    rows = [measure_serving(stub, label, flags, args, errors, stack)
            for label, flags in commands]
    print_serving(rows, direct, percentile(base.direct, 50) * 1000 if base.direct else 0.0)
    sys.stdout.flush()
    stub.stop()


# -- the run ----------------------------------------------------------------------------------


# -- the fault phase (upstream faults the proxy must retry or map) ------------------------------

#: (label, stub fault, stream, reps, what the client must get: status, or "error event").
FAULTS = [
    ("healthy", {"mode": "ok"}, False, 20, 200),
    ("500 then 200", {"mode": "500", "every": 2}, False, 20, 200),
    ("503 then 200", {"mode": "503", "every": 2}, False, 20, 200),
    ("dropped connection then 200", {"mode": "cut", "every": 2}, False, 20, 200),
    ("429 Retry-After 0.2 s then 200", {"mode": "429", "every": 2, "retry_after": 0.2},
     False, 5, 200),
    ("429 Retry-After 0.3 s, always", {"mode": "429", "retry_after": 0.3}, False, 3, 429),
    ("429 Retry-After 120 s (over the cap)", {"mode": "429", "retry_after": 120}, False, 5,
     429),
    ("500, always", {"mode": "500"}, False, 5, 502),
    ("200 with broken JSON", {"mode": "malformed"}, False, 10, 502),
    ("no answer (hang) past --upstream-timeout 1", {"mode": "hang", "hang_s": 5}, False, 2,
     504),
    ("stream 502 then 200", {"mode": "502", "every": 2}, True, 10, 200),
    ("stream cut midway", {"mode": "cut"}, True, 10, "error event"),
]


def fault_call(port: int, stream: bool) -> tuple[int, str | None, bytes, float]:
    """One chat request on a fresh connection: (status, Retry-After, body, seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        start = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", chat_body(stream=stream), HEADERS)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.getheader("Retry-After"), data, time.perf_counter() - start
    finally:
        conn.close()


def run_faults(args: argparse.Namespace, stack: contextlib.ExitStack,
               errors: ErrorLog) -> None:
    """The fault phase: a stub with scripted faults (``FAULTS``) under the proxy (default
    ``--upstream-retries 2``, ``--upstream-timeout 1``); per fault, what the client got, the
    upstream calls per request and the latency added over the healthy case."""
    log("fault phase: scripted upstream faults...")
    stub = stack.enter_context(stub_upstream.start_subprocess(latency_ms=0))
    env = {**proxy_env(stub.url), "OPTILLM_UPSTREAM_TIMEOUT": "1"}
    proxy = start_gunicorn(env, log_prefix="bench-faults-")
    stack.callback(proxy.stop)
    port = int(urllib.parse.urlsplit(proxy.url).port)
    print("\n### Upstream faults (passthrough, --upstream-retries 2, --upstream-timeout 1)\n")
    print("| upstream fault | client got | expected | upstream calls / request | "
          "Retry-After | p50 ms | added p50 ms |")
    print("|---|---|---|---:|---|---:|---:|")
    for _ in range(5):  # warm-up: the workers' first requests import and connect
        fault_call(port, False)
    healthy_p50 = None
    for label, fault, stream, reps, expected in FAULTS:
        reps = max(1, reps // 2) if args.quick else reps
        stub.fail(**fault)
        stub.reset()
        got, waits, times = [], set(), []
        for _ in range(reps):
            status, wait, data, elapsed = fault_call(port, stream)
            broke = stream and status == 200 and b'data: {"error"' in data
            got.append("error event" if broke else status)
            waits.add(wait)
            times.append(elapsed)
        calls = stub.stats()["chat_calls"] / reps
        stub.fail("ok")
        p50 = statistics.median(times) * 1000
        healthy_p50 = p50 if healthy_p50 is None else healthy_p50
        outcome = ", ".join(f"{n} x {k}" for k, n in sorted(
            {g: got.count(g) for g in got}.items(), key=lambda kv: str(kv[0])))
        if any(g != expected for g in got):
            errors.add(f"fault {label!r}", f"expected {expected}, got {outcome}")
        shown = ", ".join(sorted(w for w in waits if w)) or "-"
        print(f"| {label} | {outcome} | {expected} | {calls:.1f} | {shown} | {p50:.1f} | "
              f"{p50 - healthy_p50:+.1f} |")
    sys.stdout.flush()
    proxy.stop()
    stub.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer requests, shorter phases")
    p.add_argument("--requests", type=int, help="sequential requests per side (default 300)")
    p.add_argument("--seconds", type=float, help="seconds per throughput row (default 5)")
    p.add_argument("--reps", type=int, help="timed calls per approach (default 3)")
    p.add_argument("--approach-latency-ms", type=float, default=300.0,
                   help="stub latency for the approach phase (default 300)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="abort (and clean up) after this many seconds (default 240; 900 with "
                        "--all-approaches)")
    p.add_argument("--all-approaches", action="store_true",
                   help="time every built-in approach, not only bon/moa/self_consistency")
    p.add_argument("--faults-only", action="store_true",
                   help="only the fault phase (scripted upstream faults, see run_faults)")
    p.add_argument("--approaches-only", action="store_true",
                   help="skip the passthrough latency and throughput phases")
    p.add_argument("--serving-only", action="store_true",
                   help="only the serving phase (the optillm command, default and --workers 2)")
    p.add_argument("--compare-worker-classes", action="store_true",
                   help="the serving phase also runs each command with --worker-class gevent")
    args = p.parse_args(argv)
    args.time_limit = args.time_limit or (900.0 if args.all_approaches else 480.0)
    args.requests = args.requests or (100 if args.quick else 300)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    args.reps = args.reps or (2 if args.quick else 3)
    return args


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


class TimeLimit(Exception):
    pass


def install_signal_handlers(time_limit: float) -> None:
    """Ctrl-C, SIGTERM and the time limit unwind the stack, so every ``finally`` cleans up."""
    def on_alarm(signum, frame):
        raise TimeLimit(f"time limit of {time_limit:g} s reached")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)


def run(args: argparse.Namespace, stack: contextlib.ExitStack, errors: ErrorLog) -> None:
    if args.faults_only:
        return run_faults(args, stack, errors)
    if not args.approaches_only:
        run_serving(args, stack, errors)  # the optillm command, default and --workers 2
        if args.serving_only:
            return
        run_passthrough(args, stack, errors)
        run_faults(args, stack, errors)
    log(f"starting a {args.approach_latency_ms:g} ms stub and a proxy over it...")
    slow = stack.enter_context(stub_upstream.start_subprocess(
        latency_ms=args.approach_latency_ms))
    slow_proxy = start_proxy(slow.url)
    stack.callback(slow_proxy.stop)
    models = ALL_APPROACH_MODELS if args.all_approaches else APPROACH_MODELS
    results = measure_approaches(slow, slow_proxy.url + "/v1", args.reps, errors, models)
    print_approaches(results, args.approach_latency_ms)


def run_passthrough(args: argparse.Namespace, stack: contextlib.ExitStack,
                    errors: ErrorLog) -> None:
    log("starting the stub upstream (0 ms) and the proxy...")
    stub = stack.enter_context(stub_upstream.start_subprocess(latency_ms=0))
    proxy = start_proxy(stub.url)
    stack.callback(proxy.stop)
    proxy_v1 = proxy.url + "/v1"
    print(f"## optillm proxy benchmark: {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, gunicorn {' '.join(GUNICORN)}, stub {stub.url}")
    print(f"\nLoad average before the run: {load_average()} (other processes compete for "
          f"the same cores; a busy machine inflates every figure).")

    log(f"passthrough latency: {args.requests} requests per side...")
    stub.reset()
    plain = measure_latency(stub.url, proxy_v1, args.requests, errors)
    streamed = measure_latency(stub.url, proxy_v1, max(40, args.requests // 3), errors,
                               stream=True)
    # The stub counts every connection: ours to it directly and the one stats() opens too.
    proxy_connections = stub.stats()["connections"] - plain.direct_connections \
        - streamed.direct_connections - 1
    print_latency(plain, streamed, proxy_connections)
    sys.stdout.flush()

    log("throughput...")
    rows = measure_throughput_table(stub.url, proxy, args.seconds, errors)
    print_throughput(rows, args.seconds)
    sys.stdout.flush()
    proxy.stop()
    stub.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    errors = ErrorLog()
    install_signal_handlers(args.time_limit)
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            run(args, stack, errors)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    except (TimeLimit, RuntimeError) as exc:
        log(f"error: {exc}")
        return 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(f"\nrequests failed: {errors.count}; run took {time.monotonic() - started:.0f} s")
    for sample in errors.samples:
        print(f"- {sample}")
    return 1 if errors.count else 0


if __name__ == "__main__":
    sys.exit(main())
