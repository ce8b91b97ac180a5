"""``optillm-eval`` end to end: the CLI's ``main()`` in-process against the session proxy on
the embedded SmolLM2-135M, five ASDiv problems. The model is tiny, so accuracy is not judged:
this checks the records, that their usage is the exact sum of the upstream calls in the
conversation log, resuming, and the report."""

from __future__ import annotations

import pytest

from optillm.eval.cli import main
from optillm.eval.runner import read_results

from .conftest import API_KEY, MODEL

pytestmark = pytest.mark.e2e


def provider_usage(proxy, user: str) -> tuple[int, int, int]:
    [record] = proxy.log_records(user)
    calls = record["provider_calls"]
    return (sum(c["response"]["usage"]["prompt_tokens"] for c in calls),
            sum(c["response"]["usage"]["completion_tokens"] for c in calls), len(calls))


def test_eval_five_problems(proxy, proxy_url, tmp_path):
    out = tmp_path / "results.jsonl"
    args = ["--dataset", "asdiv", "--limit", "5", "--seed", "3", "--model", MODEL,
            "--base-url", f"{proxy_url}/v1", "--api-key", API_KEY, "--max-tokens", "48",
            "--concurrency", "2", "--output", str(out), "--no-progress"]
    assert main(args) == 0
    records = read_results(out)
    assert len(records) == 5 and len({r["id"] for r in records}) == 5
    for r in records:
        assert r["error"] is None and r["approach"] == "none" and r["model"] == MODEL
        assert isinstance(r["correct"], bool) and r["gold"].strip()
        assert 0 < r["completion_tokens"] <= 48 and r["prompt_tokens"] > 20
        assert r["upstream_calls"] == 1 and r["wall_s"] > 0
        prompt, completion, n = provider_usage(proxy, f"optillm-eval/asdiv/{r['id']}/none")
        assert (prompt, completion, n) == (r["prompt_tokens"], r["completion_tokens"], 1)

    # an approach on two of the same problems; the five of `none` are not asked again
    assert main([*args[:3], "2", *args[4:], "--approaches", "none,re2"]) == 0
    records = read_results(out)
    re2 = [r for r in records if r["approach"] == "re2"]
    assert len(records) == 7 and len(re2) == 2
    for r in re2:
        prompt, completion, n = provider_usage(proxy, f"optillm-eval/asdiv/{r['id']}/re2")
        assert (prompt, completion) == (r["prompt_tokens"], r["completion_tokens"]) and n == 1

    md, png = tmp_path / "results.md", tmp_path / "results.png"
    assert main(["report", str(out), "--out", str(md), "--plot", str(png)]) == 0
    text = md.read_text()
    assert "| asdiv | none | 5 |" in text and "| asdiv | re2 | 2 |" in text
    assert png.stat().st_size > 1000
