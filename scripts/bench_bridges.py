"""What each bridge adds over our own chat-completions path, on the stub upstream (p50, one run).

Run (machine-wide benchmark lock)::

    flock /tmp/optillm-model.lock python scripts/bench_bridges.py [-n 200]

One stub upstream (``stub_upstream.py``, its own process, no latency) and two proxies under
gunicorn (``bench_proxy.start_gunicorn``: 2 gthread workers): proxy A talks to the stub over
HTTP and has a ``cli_agents`` entry (tests/agents/toy_agent.py, ``echo``); proxy B is
``--upstream-provider litellm`` with the stub as ``api_base``. Each row sends ``n`` requests
one after another on one keep-alive connection (after 10 warm-up requests) and reports the
median latency (whole answer; streamed rows read to the end) and what it adds over its
baseline row:

    chat / chat stream / chat re2          the baselines: POST /v1/chat/completions on A
    anthropic / anthropic stream / re2     POST /v1/messages on A (same plan, same stub call)
    litellm upstream / litellm re2         chat completions on B (litellm.completion -> stub)
    cli agent                              chat completions on A, model cli/echo (a process
                                           per request)
    litellm direct / litellm -> optillm    in this process: litellm.completion("openai/...")
                                           against the stub, then "optillm/none/openai/..." and
                                           "optillm/re2/openai/..." (optillm's provider)
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stub_upstream  # noqa: E402 - lives next to this script
from bench_proxy import percentile, proxy_env, start_gunicorn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "tests" / "agents" / "toy_agent.py"
MESSAGES = [{"role": "user", "content": "What is 6 x 7?"}]


def chat_body(model: str, stream: bool = False) -> bytes:
    body = {"model": model, "max_tokens": 16, "messages": MESSAGES}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def timed(conn: http.client.HTTPConnection, path: str, body: bytes,
          headers: dict[str, str]) -> float:
    """Seconds for one POST read to its end. Raises RuntimeError on a non-200 answer."""
    start = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.perf_counter() - start
    if resp.status != 200:
        raise RuntimeError(f"{path}: {resp.status} {data[:300]!r}")
    return elapsed


def p50_http(url: str, path: str, body: bytes, n: int,
             headers: dict[str, str] | None = None) -> float:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        for _ in range(10):
            timed(conn, path, body, headers or {})
        return percentile([timed(conn, path, body, headers or {}) for _ in range(n)], 50)
    finally:
        conn.close()


def p50_call(fn, n: int) -> float:
    for _ in range(10):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return percentile(samples, 50)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200, help="requests per row (default 200)")
    args = parser.parse_args(argv)
    n = args.n
    stub = stub_upstream.start_subprocess()
    work = Path(tempfile.mkdtemp(prefix="bench-bridges-"))
    config = work / "optillm.yaml"
    config.write_text(json.dumps({"cli_agents": {"echo": {
        "command": [sys.executable, str(AGENT), "--mode", "echo"], "timeout": 30}}}))
    proxy_a = start_gunicorn({**proxy_env(stub.url), "OPTILLM_CONFIG": str(config)})
    proxy_b = start_gunicorn({**proxy_env(stub.url), "OPTILLM_UPSTREAM_PROVIDER": "litellm",
                              "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    rows: list[tuple[str, float, str | None]] = []
    try:
        anth = {"x-api-key": "sk-bench"}

        def messages(model: str, stream: bool = False) -> bytes:
            return json.dumps({"model": model, "max_tokens": 16, "messages": MESSAGES,
                               "stream": stream}).encode()

        a, b = proxy_a.url, proxy_b.url
        rows.append(("chat", p50_http(a, "/v1/chat/completions", chat_body("stub-model"), n),
                     None))
        rows.append(("anthropic", p50_http(a, "/v1/messages", messages("stub-model"), n,
                                           anth), "chat"))
        rows.append(("chat stream", p50_http(a, "/v1/chat/completions",
                                             chat_body("stub-model", True), n), None))
        rows.append(("anthropic stream", p50_http(a, "/v1/messages",
                                                  messages("stub-model", True), n, anth),
                     "chat stream"))
        rows.append(("chat re2", p50_http(a, "/v1/chat/completions",
                                          chat_body("re2-stub-model"), n), None))
        rows.append(("anthropic re2", p50_http(a, "/v1/messages", messages("re2-stub-model"),
                                               n, anth), "chat re2"))
        rows.append(("litellm upstream", p50_http(b, "/v1/chat/completions",
                                                  chat_body("openai/stub-model"), n), "chat"))
        rows.append(("litellm upstream re2", p50_http(
            b, "/v1/chat/completions", chat_body("re2-openai/stub-model"), n), "chat re2"))
        rows.append(("cli agent", p50_http(a, "/v1/chat/completions", chat_body("cli/echo"),
                                           max(20, n // 5)), "chat"))

        from optillm.settings import prepare_litellm_import

        prepare_litellm_import()
        import litellm

        from optillm.integrations.litellm import register

        register()

        def via(model: str):
            return lambda: litellm.completion(model=model, messages=MESSAGES, max_tokens=16,
                                              api_base=stub.url, api_key="sk-bench")

        rows.append(("litellm direct", p50_call(via("openai/stub-model"), n), None))
        rows.append(("litellm -> optillm none", p50_call(
            via("optillm/none/openai/stub-model"), n), "litellm direct"))
        rows.append(("litellm -> optillm re2", p50_call(
            via("optillm/re2/openai/stub-model"), n), "litellm direct"))
    finally:
        proxy_a.stop()
        proxy_b.stop()
        stub.stop()
    p50 = {name: value for name, value, _ in rows}
    print(f"bench_bridges: n={n} per row (cli agent: {max(20, n // 5)}), p50 of one run, "
          f"stub upstream without latency")
    print(f"{'row':<26}{'p50 ms':>9}  adds over")
    for name, value, base in rows:
        extra = f"{(value - p50[base]) * 1000:+8.2f} ms over {base}" if base else "(baseline)"
        print(f"{name:<26}{value * 1000:9.2f}  {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
