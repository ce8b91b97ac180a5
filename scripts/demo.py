"""Start optillm in front of the embedded local model and ask it a real question.

Usage: ``python scripts/demo.py [--question TEXT] [--port N]``. Uses the official ``openai``
SDK as the client, as a user would; stops the proxy (and with it llama-server) at the end.
The embedded model is Qwen2.5-Coder-0.5B-Instruct (its first start assembles the weights into
~/.cache/optillm/models, a few seconds); the question is a word problem, asked plainly, with
re2, and with majority voting (several reasoned samples, the most common answer).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request

import openai

from optillm.settings import LOCAL_MODEL_NAME

QUESTION = ("A baker makes 24 muffins. She sells 3 boxes of 5 muffins and eats 2. How many "
            "muffins are left? Reason step by step, then end with 'The answer is N'.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"optillm exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("optillm did not become healthy in time")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--question", default=QUESTION)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "optillm", "--port", str(port)],
                            env={**os.environ, "OPTILLM_LOG": "warning"})
    try:
        wait_healthy(base, proc)
        client = openai.OpenAI(base_url=base + "/v1", api_key="sk-local")
        print(f"\nQ: {args.question}\n")
        for model in (LOCAL_MODEL_NAME, f"re2-{LOCAL_MODEL_NAME}",
                      f"majority_voting-{LOCAL_MODEL_NAME}"):
            start = time.monotonic()
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": args.question}],
                max_tokens=256, temperature=0.3)
            took = time.monotonic() - start
            print(f"[{model}] ({reply.usage.total_tokens} tokens, {took:.1f} s)")
            print(f"A: {reply.choices[0].message.content.strip()}\n")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
