"""Scoring known right and wrong answers, HumanEval through the sandbox."""

from __future__ import annotations

import pytest

from optillm.eval.datasets import Problem, load
from optillm.eval.scoring import program_for, score


def problem(fmt: str, gold: str) -> Problem:
    return Problem("t", "1", "q", gold, fmt)


@pytest.mark.parametrize("text,gold,correct,predicted", [
    ("She pays 1,234 dollars.\nThe answer is 1,234.", "1234", True, "1234"),
    ("So the total is $1,234.00", "1234", True, "1234"),
    ("#### 18", "18", True, "18"),
    ("The answer is 17.", "18", False, "17"),
    ("I am not sure.", "18", False, None),
    ("", "18", False, None),
])
def test_numbers(text, gold, correct, predicted):
    s = score(problem("number", gold), text)
    assert (s.correct, s.predicted) == (correct, predicted)


@pytest.mark.parametrize("text,gold,correct", [
    ("so the answer is \\boxed{\\frac12}", "0.5", True),
    ("\\boxed{\\frac{1}{2}}", "\\frac12", True),
    ("\\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{\\frac13}", "0.5", False),
    ("The final answer is 204.", "204", True),  # no \boxed: the auto extraction
    ("\\boxed{", "204", False),  # garbage
])
def test_math(text, gold, correct):
    assert score(problem("math", gold), text).correct is correct


@pytest.mark.parametrize("text,correct,predicted", [
    ("Planetary days get shorter. The answer is C.", True, "C"),
    ("Answer: (C)", True, "C"),
    ("The answer is B.", False, "B"),
    ("no idea", False, None),
])
def test_letters(text, correct, predicted):
    s = score(problem("choice", "C"), text)
    assert (s.correct, s.predicted) == (correct, predicted)


@pytest.fixture(scope="module")
def humaneval():
    return {p.id: p for p in load("humaneval")}


def test_canonical_solution_passes(humaneval):
    p = humaneval["HumanEval/0"]
    assert score(p, f"Here it is:\n```python\n{p.gold}```\nDone.").correct
    body = p.gold[len(p.extra["prompt"]):]  # a body-only completion, no fence
    assert score(p, body).correct


def test_canonical_solution_with_helpers_passes(humaneval):
    p = humaneval["HumanEval/10"]  # the prompt defines a helper (is_palindrome) too
    assert score(p, f"```python\n{p.gold}```").correct


def test_wrong_and_malformed_code_fail(humaneval):
    p = humaneval["HumanEval/0"]
    wrong = score(p, "```python\ndef has_close_elements(numbers, threshold):\n"
                     "    return False\n```")
    assert not wrong.correct and "AssertionError" in wrong.error
    assert not score(p, "```python\ndef has_close_elements(:\n```").correct
    assert not score(p, "").correct


def test_code_cannot_hang_or_reach_the_network(humaneval):
    p = humaneval["HumanEval/0"]
    loop = score(p, "```python\ndef has_close_elements(n, t):\n    while True:\n        pass\n"
                    "```")
    assert not loop.correct
    net = score(p, "```python\nimport socket\n"
                   "def has_close_elements(n, t):\n"
                   "    socket.create_connection(('1.1.1.1', 80), timeout=1)\n"
                   "    return True\n```")
    assert not net.correct


def test_program_appends_tests_and_check(humaneval):
    p = humaneval["HumanEval/0"]
    prog = program_for(p, "def has_close_elements(a, b):\n    return 1\n")
    assert prog.startswith(p.extra["prompt"]) and prog.rstrip().endswith(
        "check(has_close_elements)")
    assert p.extra["test"] in prog


def test_unknown_format_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown answer format"):
        score(problem("essay", "x"), "text")
