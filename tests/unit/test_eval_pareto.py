"""The accuracy/token Pareto frontier (per dataset and a mixed set), its table and plot, and
the dev/test split of ``optillm-eval``."""

from __future__ import annotations

import json

import pytest

from optillm.eval import pareto
from optillm.eval.cli import main, select, split
from optillm.eval.datasets import Problem
from optillm.eval.report import summarize


def rec(pid, approach, correct, tokens, dataset="d", split_name=None):
    return {"dataset": dataset, "id": str(pid), "approach": approach, "correct": correct,
            "prompt_tokens": tokens, "completion_tokens": 0, "upstream_calls": 1,
            "wall_s": 1.0, "error": None, "split": split_name}


def table():
    """none 5/10 at 10 tokens; cheap_bad 3/10 at 20 (dominated by none); mv 8/10 at 50;
    costly 8/10 at 90 (dominated by mv, as accurate and cheaper)."""
    out = []
    for i in range(10):
        out += [rec(i, "none", i < 5, 10), rec(i, "cheap_bad", i < 3, 20),
                rec(i, "mv", i < 8, 50), rec(i, "costly", i < 8, 90)]
    return out


def test_frontier_marks_the_undominated():
    points = {p.approach: p for p in pareto.frontier(summarize(table()))}
    assert points["none"].on_frontier and points["mv"].on_frontier
    assert not points["cheap_bad"].on_frontier and points["cheap_bad"].dominated_by == "none"
    assert not points["costly"].on_frontier and points["costly"].dominated_by == "mv"
    assert [p.approach for p in pareto.frontier(summarize(table()))] == \
        ["none", "cheap_bad", "mv", "costly"]  # by cost


def test_points_without_tokens_are_never_on_the_frontier():
    recs = table() + [{**rec(i, "blind", True, 0), "prompt_tokens": None,
                       "completion_tokens": None} for i in range(10)]
    points = {p.approach: p for p in pareto.frontier(summarize(recs))}
    assert points["blind"].tokens is None and not points["blind"].on_frontier
    assert points["mv"].on_frontier  # a point of unknown cost dominates nothing


def test_mixed_set_pools_datasets_on_shared_test_problems():
    recs = [{**r, "split": "test"} for r in table()]
    recs += [rec(i, a, a == "none", 5, dataset="e", split_name="test")
             for i in range(10) for a in ("none", "mv")]
    recs += [rec(i + 50, "none", False, 5, dataset="e", split_name="dev") for i in range(10)]
    recs += [rec(99, "tiny_trial", True, 1, dataset="e", split_name="test")]
    # on every problem of "e" but on only 4 of "d"'s 10: would shrink the mix to 14 problems
    recs += [rec(i, "lopsided", True, 1, dataset="e", split_name="test") for i in range(10)]
    recs += [{**r, "approach": "lopsided", "split": "test"} for r in table()
             if r["approach"] == "none"][:4]
    rows = {r.approach: r for r in pareto.mixed_rows(recs)}
    # cheap_bad/costly: not on "e"; tiny_trial: 1 problem; lopsided: under half of "d"
    assert set(rows) == {"none", "mv"}
    assert rows["none"].n == 20 and rows["none"].correct == 15  # 5 of d + 10 of e, no dev
    assert rows["mv"].correct == 8 and rows["mv"].dataset == pareto.MIXED
    assert pareto.mixed_rows(table()) == []  # one dataset: no mix
    only_d = pareto.mixed_rows(recs, ["d"])
    assert only_d == []


def test_markdown_and_plot(tmp_path):
    points = pareto.frontier(summarize(table()))
    text = pareto.markdown(points)
    assert "| d | mv | 10 | 80.0% |" in text and "**frontier**" in text
    assert "dominated by mv" in text
    path = tmp_path / "p.png"
    pareto.plot(points, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("placer", ["adjustText", "stagger"])
def test_plot_labels_do_not_overlap(tmp_path, monkeypatch, placer):
    """Six approaches at nearly the same point: every label's box ends up apart (adjustText,
    or the fallback stagger without it)."""
    import sys

    import matplotlib

    if placer == "stagger":
        monkeypatch.setitem(sys.modules, "adjustText", None)  # import fails

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [rec(i, f"approach_{a}", i < 5 + (a % 2), 100 + a) for i in range(10)
            for a in range(6)]
    boxes = []
    real_close = plt.close

    def capture(fig):
        fig.canvas.draw()
        for ax in fig.axes:
            boxes.extend(t.get_window_extent() for t in ax.texts)
        real_close(fig)

    monkeypatch.setattr(plt, "close", capture)
    pareto.plot(pareto.frontier(summarize(recs)), tmp_path / "crowded.png")
    assert len(boxes) == 6
    overlapping = [(i, j) for i in range(6) for j in range(i + 1, 6)
                   if boxes[i].overlaps(boxes[j])]
    assert not overlapping


def test_report_command_adds_the_frontier_and_the_mixed_group(tmp_path):
    recs = table() + [rec(i, a, True, 5, dataset="e") for i in range(10) for a in ("none", "mv")]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "r.md"
    assert main(["report", str(path), "--out", str(out), "--plot", str(tmp_path / "r.png")]) == 0
    text = out.read_text()
    assert "Pareto frontier" in text and "| mixed | none | 20 |" in text
    assert "Holm p" in text


def problems(n):
    return [Problem("x", str(i), f"q{i}", "1", "number") for i in range(n)]


def test_dev_and_test_splits_never_overlap():
    ps = problems(1000)
    test, dev = split(ps, "test"), split(ps, "dev")
    assert len(test) == 200 and len(dev) == 700
    assert not {p.id for p in test} & {p.id for p in dev}
    assert [p.id for p in test] == [p.id for p in select(ps, 200, 0)]  # seed-0 shuffle
    assert {p.split for p in test} == {"test"} and {p.split for p in dev} == {"dev"}
    shuffled = [p.id for p in select(ps, None, 0)]
    assert [p.id for p in dev] == shuffled[300:]
    with pytest.raises(ValueError, match="no dev split"):
        split(problems(250), "dev")
    with pytest.raises(ValueError, match="unknown split"):
        split(ps, "train")


def test_split_and_seed_do_not_mix(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--dataset", "asdiv", "--split", "dev", "--seed", "3", "--output", "/dev/null"])
    assert exc.value.code == 2 and "--split" in capsys.readouterr().err
