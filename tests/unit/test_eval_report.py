"""Wilson intervals, the exact McNemar test, summaries, the markdown report and the plot."""

from __future__ import annotations

import json

import pytest

from optillm.eval.cli import main
from optillm.eval.report import compare, holm, markdown, mcnemar, plot, summarize, wilson


@pytest.mark.parametrize("k,n,low,high", [
    (5, 10, 0.2366, 0.7634),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (1, 20, 0.0089, 0.2361),
    (81, 263, 0.2553, 0.3662),
])
def test_wilson_known_values(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


def test_wilson_edges():
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)


@pytest.mark.parametrize("b,c,p", [
    (0, 0, 1.0), (3, 3, 1.0), (1, 6, 0.125), (0, 6, 0.03125), (6, 0, 0.03125),
    (2, 8, 56 / 512), (0, 1, 1.0)])
def test_mcnemar_exact(b, c, p):
    assert mcnemar(b, c) == pytest.approx(p)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar(-1, 2)


def rec(pid, approach, correct, tokens=(10, 5), calls=1, error=None, wall=1.0, dataset="d"):
    return {"dataset": dataset, "id": str(pid), "approach": approach, "correct": correct,
            "prompt_tokens": tokens[0], "completion_tokens": tokens[1],
            "upstream_calls": calls, "wall_s": wall, "error": error}


def records():
    out = [rec(i, "none", i < 4) for i in range(10)]                 # 4/10
    out += [rec(i, "moa", i < 10, (40, 20), None, wall=3.0) for i in range(10)]  # 10/10
    out += [rec(0, "re2", False, error="boom")]                    # retried below
    out += [rec(i, "re2", i < 5, (20, 5), 1) for i in range(10)]      # 5/10
    return out


def test_summary_rows():
    rows = {r.approach: r for r in summarize(records())}
    none, moa, re2 = rows["none"], rows["moa"], rows["re2"]
    assert (none.n, none.correct, none.accuracy) == (10, 4, 0.4)
    assert (none.low, none.high) == wilson(4, 10)
    assert none.prompt_tokens == 10 and none.completion_tokens == 5 and none.total_tokens == 15
    assert moa.upstream_calls is None and moa.wall_s == 3.0 and moa.accuracy == 1.0
    assert re2.n == 10 and re2.correct == 5 and re2.errors == 0  # the failure was retried


def test_failed_requests_count_as_wrong_and_out_of_the_means():
    rows = summarize([rec(0, "none", True), rec(1, "none", False, (None, None), None, "x")])
    assert rows[0].accuracy == 0.5 and rows[0].errors == 1 and rows[0].prompt_tokens == 10


def test_paired_comparison_against_none():
    pairs = {p.approach: p for p in compare(records())}
    moa = pairs["moa"]
    assert (moa.n, moa.both, moa.only_baseline, moa.only_approach) == (10, 4, 0, 6)
    assert moa.p == pytest.approx(0.03125) and moa.verdict == "better"
    re2 = pairs["re2"]
    assert (re2.only_baseline, re2.only_approach) == (0, 1)
    assert re2.verdict == "not significant"
    worse = compare([rec(i, "none", True) for i in range(6)]
                    + [rec(i, "x", False) for i in range(6)])[0]
    assert worse.verdict == "worse"


def test_pairs_only_on_shared_problems():
    pairs = compare([rec(1, "none", True), rec(2, "none", False), rec(2, "bon", True),
                     rec(3, "bon", True)])
    assert len(pairs) == 1 and pairs[0].n == 1 and pairs[0].only_approach == 1


def test_markdown_table():
    text = markdown(summarize(records()), compare(records()))
    assert "| d | none | 10 | 40.0% | 16.8% – 68.7% | 10.0 | 5.0 | 1.00 | 1.00 | 0 |" in text
    # p 0.03125 alone, doubled by Holm over the two approaches compared: not significant
    assert "| d | moa | 10 | 4 | 0 | 6 | 0.0312 | 0.0625 | not significant |" in text
    assert "| d | re2 | 10 | 4 | 0 | 1 | 1 | 1 | not significant |" in text
    assert "not significant" in text and "n/a" in text


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "plot.png"
    plot(summarize(records()), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_command(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records()) + '{"cut sho')
    out, png = tmp_path / "docs" / "results.md", tmp_path / "docs" / "results.png"
    assert main(["report", str(results), "--out", str(out), "--plot", str(png)]) == 0
    assert "| d | moa | 10 | 100.0% |" in out.read_text()
    assert png.stat().st_size > 1000
    assert main(["report", str(results)]) == 0
    assert "## Paired comparison against `none`" in capsys.readouterr().out


@pytest.mark.parametrize("ps, adjusted", [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    ([0.5], [0.5]),
    ([0.3, 0.6], [0.6, 0.6]),  # step-down stays monotone
    ([], []),
])
def test_holm_adjustment(ps, adjusted):
    assert holm(ps) == pytest.approx(adjusted)


def test_holm_family_is_one_dataset():
    # moa beats none 6-0 on "d" (p 0.03125) and is the only approach on "e": no adjustment
    recs = records() + [rec(i, a, a == "moa", dataset="e") for i in range(6)
                        for a in ("none", "moa")]
    pairs = {(p.dataset, p.approach): p for p in compare(recs)}
    assert pairs[("e", "moa")].p_holm == pytest.approx(0.03125)
    assert pairs[("e", "moa")].holm_verdict == "better"
    assert pairs[("d", "moa")].p_holm == pytest.approx(0.0625)
    assert pairs[("d", "moa")].holm_verdict == "not significant"
    assert pairs[("d", "moa")].verdict == "better"  # the unadjusted verdict is kept


def test_splits_are_reported_apart():
    recs = [rec(i, "none", True) | {"split": "test"} for i in range(3)] + \
        [rec(i + 10, "none", False) | {"split": "dev"} for i in range(2)]
    rows = {r.dataset: r for r in summarize(recs)}
    assert rows["d:test"].accuracy == 1.0 and rows["d:dev"].accuracy == 0.0
