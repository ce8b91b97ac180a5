"""Benchmark the gateway on loopback: the cache hit's latency, and failover under faults.

1. Cache: a stub upstream (``scripts/stub_upstream.py``, ``--latency-ms``, default 0) and the
   proxy under gunicorn (``-w 2 -k gthread``) with the response cache on, once over the
   embedded on-disk store and once over Redis (a private ``redis-server`` on a free port, when
   the binary exists). Sequential non-streamed requests over one keep-alive connection,
   interleaved: the proxy's passthrough (``temperature`` 0.7, never cached) against a cache
   hit (the same deterministic request, ``temperature`` 0, primed once). Prints p50/p95 of
   both and their ratio.
2. Failover: three stub endpoints in one model group (weights 1, 1, 1; the cache off), one
   started with ``--fail 500 --fail-every 2`` (it fails half of its calls). ``--requests``
   requests (default 300) from ``--clients`` threads (default 8): requests lost (any answer
   that is not a chat completion; target zero) and p50/p95 latency, with the same load on
   three healthy endpoints as the baseline, and the calls each stub saw.

Prints markdown tables (progress on stderr), stops everything it started, exits 1 when a
request was lost. All traffic goes to 127.0.0.1.

    python scripts/bench_gateway.py [--requests 300] [--clients 8] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stub_upstream  # noqa: E402 - lives next to this script
from bench_proxy import (  # noqa: E402
    Connection,
    ErrorLog,
    Proxy,
    check_completion,
    free_port,
    log,
    percentile,
    proxy_env,
    start_gunicorn,
)

MODEL = "stub-model"
GROUP = "bench-model"


def body(temperature: float, model: str = MODEL, text: str = "What is 6 x 7?") -> bytes:
    return json.dumps({"model": model, "temperature": temperature, "max_tokens": 16,
                       "messages": [{"role": "user", "content": text}]}).encode()


def start_gateway(env: dict[str, str], timeout: float = 30.0) -> Proxy:
    """gunicorn with ``env`` (``OPTILLM_*``); returns once ``/health`` answers.

    Raises: RuntimeError with the proxy's log when it exits or is not healthy in time.
    """
    return start_gunicorn(env, timeout, log_prefix="bench-gateway-")


@contextlib.contextmanager
def redis_server():
    """A private redis-server on a free port (``redis://...`` URL), or None without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", workdir],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
                time.sleep(0.05)
            else:
                raise RuntimeError("redis-server did not answer")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


# -- 1. the cache ---------------------------------------------------------------------------

def call(conn: Connection, data: bytes, errors: ErrorLog, where: str) -> tuple[float, str]:
    """Seconds for one request and its ``X-Optillm-Cache`` header."""
    start = time.perf_counter()
    resp = conn._send("POST", "/v1/chat/completions", data)
    payload = resp.read()
    elapsed = time.perf_counter() - start
    problem = check_completion(resp.status, payload)
    if problem:
        errors.add(where, problem)
    return elapsed, resp.getheader("X-Optillm-Cache") or ""


def measure_cache(stub_url: str, store_env: dict[str, str], n: int,
                  errors: ErrorLog) -> dict[str, list[float]]:
    env = {**proxy_env(stub_url), "OPTILLM_CACHE_TTL": "3600", **store_env}
    proxy = start_gateway(env)
    try:
        conn = Connection(proxy.url)
        for _ in range(4):  # prime the entry in both workers' paths, warm the connections
            call(conn, body(0), errors, "prime")
            call(conn, body(0.7), errors, "warm-up")
        out: dict[str, list[float]] = {"passthrough": [], "hit": []}
        for i in range(n):
            for kind, temp in (("passthrough", 0.7), ("hit", 0)) if i % 2 else \
                    (("hit", 0), ("passthrough", 0.7)):
                elapsed, state = call(conn, body(temp), errors, kind)
                if state != ("hit" if kind == "hit" else "miss"):
                    errors.add(kind, f"X-Optillm-Cache: {state!r}")
                out[kind].append(elapsed)
        conn.close()
        return out
    finally:
        proxy.stop()


# -- 2. failover ----------------------------------------------------------------------------

def gateway_config(urls: list[str], path: str) -> None:
    endpoints = "".join(f"    - {{base_url: '{u}', model: {MODEL}, weight: 1, name: ep{i}}}\n"
                        for i, u in enumerate(urls))
    Path(path).write_text(f"model_groups:\n  {GROUP}:\n{endpoints}"
                          f"general_settings:\n  retries: 2\n  allowed_fails: 3\n"
                          f"  cooldown_time: 5\n  cache_ttl: 0\n")


def load(proxy_url: str, requests: int, clients: int, errors: ErrorLog,
         where: str) -> list[float]:
    """``requests`` chat requests from ``clients`` threads; latencies of all of them."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        conn = Connection(proxy_url)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    status, data = conn.request("POST", "/v1/chat/completions",
                                                body(0.7, GROUP, f"question {i}"))
                except (OSError, http.client.HTTPException) as exc:
                    errors.add(where, f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = Connection(proxy_url)
                    continue
                elapsed = time.perf_counter() - start
                problem = check_completion(status, data)
                if problem:
                    errors.add(where, problem)
                with lock:
                    latencies.append(elapsed)
        finally:
            conn.close()

    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    return latencies


def measure_failover(args, stack: contextlib.ExitStack) -> list[tuple[str, int, list[float],
                                                                       list[dict]]]:
    stubs = [stack.enter_context(stub_upstream.start_subprocess(args.latency_ms))
             for _ in range(2)]
    stubs.append(stack.enter_context(stub_upstream.start_subprocess(
        args.latency_ms, fail="500", fail_every=2)))
    config = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gw-")) + "/gw.yaml"
    gateway_config([s.url for s in stubs], config)
    env = {k: v for k, v in proxy_env(stubs[0].url).items() if k != "OPTILLM_BASE_URL"}
    env["OPTILLM_CONFIG"] = config
    proxy = start_gateway(env)
    stack.callback(proxy.stop)
    rows = []
    for label, mode in (("3 healthy endpoints", "ok"),
                        ("one of 3 fails half its calls (500)", "500")):
        stubs[2].fail(mode, every=2)
        for s in stubs:
            s.reset()
        errors = ErrorLog()
        log(f"failover: {label}, {args.requests} requests, {args.clients} clients")
        latencies = load(proxy.url, args.requests, args.clients, errors, label)
        rows.append((label, errors.count, latencies, [s.stats() for s in stubs]))
        for sample in errors.samples:
            log(f"  lost: {sample}")
    return rows


# -- output ---------------------------------------------------------------------------------

def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def print_cache(rows: list[tuple[str, dict[str, list[float]]]], latency_ms: float) -> None:
    print(f"\n### Cache hit vs the proxy's passthrough (stub latency {latency_ms:g} ms)\n")
    print("| store | requests | passthrough p50 | passthrough p95 | hit p50 | hit p95 | "
          "hit / passthrough (p50) |")
    print("|---|---|---|---|---|---|---|")
    for store, d in rows:
        p, h = d["passthrough"], d["hit"]
        print(f"| {store} | {len(p)} + {len(h)} | {ms(percentile(p, 50))} | "
              f"{ms(percentile(p, 95))} | {ms(percentile(h, 50))} | {ms(percentile(h, 95))} | "
              f"{percentile(h, 50) / percentile(p, 50):.2f} |")


def print_failover(rows, requests: int, clients: int) -> None:
    print(f"\n### Failover: {requests} requests, {clients} concurrent clients, 3 endpoints\n")
    print("| endpoints | requests lost | p50 | p95 | calls per endpoint (ep0/ep1/ep2) | "
          "faults injected |")
    print("|---|---|---|---|---|---|")
    for label, lost, lat, stats in rows:
        calls = "/".join(str(s.get("chat_calls", s.get("requests", 0))) for s in stats)
        faults = sum(s.get("faults", 0) for s in stats)
        print(f"| {label} | {lost} of {requests} | {ms(percentile(lat, 50))} | "
              f"{ms(percentile(lat, 95))} | {calls} | {faults} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--requests", type=int, default=300, help="failover requests per run")
    p.add_argument("--clients", type=int, default=8, help="concurrent failover clients")
    p.add_argument("--cache-requests", type=int, default=300,
                   help="cache hits and passthrough calls measured (each)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="the stubs' latency")
    args = p.parse_args(argv)
    cache_errors = ErrorLog()
    with contextlib.ExitStack() as stack:
        stub = stack.enter_context(stub_upstream.start_subprocess(args.latency_ms))
        cache_rows = []
        store_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-store-"))
        log("cache: on-disk store")
        cache_rows.append(("on-disk", measure_cache(stub.url, {"OPTILLM_CACHE_DIR": store_dir},
                                                    args.cache_requests, cache_errors)))
        url = stack.enter_context(redis_server())
        if url:
            log("cache: Redis")
            cache_rows.append(("Redis", measure_cache(stub.url, {"OPTILLM_REDIS_URL": url},
                                                      args.cache_requests, cache_errors)))
        else:
            log("cache: no redis-server here; Redis skipped")
        failover_rows = measure_failover(args, stack)
    print_cache(cache_rows, args.latency_ms)
    print_failover(failover_rows, args.requests, args.clients)
    for sample in cache_errors.samples:
        log(f"cache error: {sample}")
    lost = sum(r[1] for r in failover_rows) + cache_errors.count
    print(f"\nrequests lost or wrong: {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
