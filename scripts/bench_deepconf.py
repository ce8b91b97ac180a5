"""DeepConf online against self-consistency at the same trace budget, on the embedded model.

Fu et al., "Deep Think with Confidence" (arXiv 2508.15260) report 43-85% fewer generated
tokens for DeepConf online than for a majority vote over the same budget, at equal accuracy.
This script measures that on the embedded model (``--local-model``: Qwen2.5-Coder-0.5B by
default, or smollm2-135m) through the proxy:

- problems: ``--problems`` (default 100) easy arithmetic questions drawn with ``--seed``
  (sums, differences and small products; the gold answer is computed), the kind the tiny model
  gets right only part of the time;
- for each problem, the same request twice: ``tts_strategy=deepconf, tts_mode=online`` and
  ``tts_strategy=self_consistency``, both with ``tts_budget`` traces, ``max_tokens`` per trace
  and the same temperature;
- per method: accuracy (with a 95% Wilson interval), generated (completion) tokens in all and per
  problem (``tts_metadata.tokens_generated``), traces started and traces cut early, wall time.

It starts its own proxy (``python -m optillm`` on a free port, embedded model) unless
``--base-url`` names one, and stops it at the end. Traffic goes to 127.0.0.1 only.

    python scripts/bench_deepconf.py [--problems 100] [--budget 8] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = {"deepconf online": {"tts_strategy": "deepconf", "tts_mode": "online"},
           "self-consistency": {"tts_strategy": "self_consistency"}}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def problems(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` (question, gold answer) pairs of easy arithmetic."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        op = rng.choice("+-*")
        if op == "-" and b > a:
            a, b = b, a
        gold = {"+": a + b, "-": a - b, "*": a * b}[op]
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        out.append((f"What is {a} {word} {b}? Think briefly, then end with "
                    f"'The answer is N'.", str(gold)))
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Tally:
    correct: int = 0
    done: int = 0
    errors: int = 0
    tokens: int = 0
    traces: int = 0
    cut: int = 0
    seconds: list[float] = field(default_factory=list)


def ask(base_url: str, model: str, question: str, extra: dict, args) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": question}],
            "max_tokens": args.max_tokens, "temperature": args.temperature,
            "tts_budget": args.budget, **extra}
    req = urllib.request.Request(f"{base_url}/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer sk-bench"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def run_method(name: str, extra: dict, items, base_url: str, model: str, args) -> Tally:
    from optillm.toolkit.answers import equivalent, extract_answer, normalize

    tally = Tally()

    def one(item):
        question, gold = item
        start = time.monotonic()
        try:
            data = ask(base_url, model, question, extra, args)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            log(f"{name}: request failed: {exc}")
            return None
        return data, gold, time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        for i, result in enumerate(pool.map(one, items), 1):
            if result is None:
                tally.errors += 1
                continue
            data, gold, seconds = result
            meta = data["choices"][0].get("tts_metadata") or {}
            predicted = extract_answer(data["choices"][0]["message"]["content"] or "")
            tally.done += 1
            tally.correct += int(predicted is not None and (normalize(predicted) == normalize(gold)
                                                          or equivalent(predicted, gold)))
            tally.tokens += int(meta.get("tokens_generated")
                                or data["usage"]["completion_tokens"])
            tally.traces += int(meta.get("num_traces") or 0)
            tally.cut += int(meta.get("traces_stopped_early") or 0)
            tally.seconds.append(seconds)
            if i % 10 == 0:
                log(f"{name}: {i}/{len(items)}")
    return tally


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(slots: int, local_model: str = "qwen2.5-coder-0.5b"
                ) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OPTILLM_") and k not in ("OPENAI_BASE_URL", "AZURE_API_BASE")}
    env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="bench-deepconf-")
    out = open(Path(env["XDG_RUNTIME_DIR"]) / "proxy.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "optillm", "--port", str(port),
                             "--local-slots", str(slots), "--local-model", local_model],
                            cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"proxy exited: {Path(out.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise SystemExit("proxy not healthy after 180 s")
    with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as r:
        models = [m["id"] for m in json.loads(r.read())["data"]]
    model = models[0]  # the upstream's own model comes first, then the approaches
    return proc, f"{url}/v1", model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=8, help="traces per problem (tts_budget)")
    p.add_argument("--max-tokens", type=int, default=48, help="per trace")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--concurrency", type=int, default=2, help="problems in flight")
    p.add_argument("--slots", type=int, default=8, help="llama-server slots (-np)")
    p.add_argument("--base-url", help="an existing proxy's /v1 URL (else one is started)")
    p.add_argument("--model", default=None, help="model name (default: the proxy's local one)")
    p.add_argument("--local-model", default="qwen2.5-coder-0.5b",
                   help="the embedded model of the proxy it starts (a short name or a GGUF)")
    args = p.parse_args(argv)
    proc = None
    if args.base_url:
        base_url, model = args.base_url.rstrip("/"), args.model or "Qwen2.5-Coder-0.5B-Instruct"
    else:
        log("starting the proxy with the embedded model...")
        proc, base_url, model = start_proxy(args.slots, args.local_model)
        model = args.model or model
    items = problems(args.problems, args.seed)
    try:
        results = {}
        for name, extra in METHODS.items():
            start = time.monotonic()
            results[name] = run_method(name, extra, items, base_url, model, args)
            log(f"{name}: done in {time.monotonic() - start:.0f} s")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\n{args.problems} easy arithmetic problems (seed {args.seed}), {model}, "
          f"tts_budget {args.budget}, max_tokens {args.max_tokens}, "
          f"temperature {args.temperature}\n")
    print("| method | accuracy | 95% CI | generated tokens | per problem | traces | cut early "
          "| errors | s/problem (p50) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, t in results.items():
        lo, hi = wilson(t.correct, t.done)
        med = sorted(t.seconds)[len(t.seconds) // 2] if t.seconds else 0.0
        print(f"| {name} | {t.correct}/{t.done} = {t.correct / max(1, t.done):.1%} | "
              f"{lo:.1%}-{hi:.1%} | {t.tokens} | {t.tokens / max(1, t.done):.0f} | {t.traces} "
              f"| {t.cut} | {t.errors} | {med:.1f} |")
    dc, sc = results["deepconf online"], results["self-consistency"]
    if sc.tokens:
        print(f"\nDeepConf online generated {1 - dc.tokens / sc.tokens:.0%} fewer tokens than "
              f"self-consistency at the same budget.")
    return 1 if any(t.errors for t in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
