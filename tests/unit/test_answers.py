"""Answer extraction, normalisation, equivalence (with and without math-verify) and voting."""

from __future__ import annotations

import functools
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from optillm.toolkit import answers
from optillm.toolkit.answers import (
    ANSWER_FORMATS,
    confidence_weight,
    equivalent,
    extract_answer,
    group_answers,
    last_boxed,
    last_code_block,
    normalize,
    vote,
)

CODE_REPLY = "Here it is:\n```python\ndef add(a, b):   \n    return a + b\n```\n"


@pytest.mark.parametrize("text, expected", [
    # GSM8K
    ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = 18 dollars.\n#### 18", "18"),
    ("#### 1,234", "1234"),
    # MATH: the last \boxed{}, nested braces kept
    ("First \\boxed{1}, then \\boxed{\\frac{\\sqrt{3}}{2}}.", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "(3,\\frac{\\pi}{2})"),
    ("The final answer is $\\boxed{7}$. I hope it is correct.", "7"),
    ("so \\fbox{x^2 + 1} is it", "x^2+1"),
    ("The answer is \\boxed{\\text{(B)}}", "B"),
    ("\\boxed{18\\text{ dollars}}", "18"),
    # stated answers
    ("The answer is $1,234.50", "1234.5"),
    ("The answer is $1,234.50. That is all.", "1234.5"),
    ("**Final Answer:** 7", "7"),
    ("**Final Answer**: 7", "7"),
    ("Final answer: the answer is 12", "12"),
    ("The answer is \\(\\dfrac{1}{2}\\)", "\\frac{1}{2}"),
    ("The answer is x = 5.", "5"),
    ("So 3 + 4 = 7. The answer is 3 + 4 = 7", "7"),
    ("The answer is 42 apples, because each box has 6.", "42"),
    ("The answer is Paris.", "paris"),
    # multiple choice
    ("Answer: (B)", "B"),
    ("Let me think.\nAnswer: C", "C"),
    ("I pick answer (C).", "C"),
    ("The correct option is D", "D"),
    ("So the answer is **B**", "B"),
    # negative numbers, fractions, percentages, units
    ("The temperature fell to -5 degrees.", "-5"),
    ("It fell to \u22125.", "-5"),
    ("The answer is 3/4.", "3/4"),
    ("The answer is 25%.", "25"),
    ("The answer is 12 cm.", "12"),
    ("The answer is 90^\\circ", "90"),
    ("blah 3 then 7.0", "7"),
    ("pages 3-5", "5"),
    # code: a closing code block is the answer; a number after it wins
    (CODE_REPLY, "def add(a, b):\n    return a + b"),
    (CODE_REPLY + "Output: 4", "4"),
    # no answer
    ("I am not sure how to solve this.", None),
    ("", None),
    ("   \n ", None),
])
def test_extract_answer_auto(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text, answer_format, expected", [
    ("The answer is \\boxed{12}, i.e. 12.0 units", "number", "12"),
    ("the price is $5 then $7.50", "number", "7.5"),
    ("#### -3", "number", "-3"),
    ("no numbers here", "number", None),
    ("The answer is B because it is blue", "choice", "B"),
    ("Result:\n(D)", "choice", "D"),
    ("\\boxed{E}", "choice", "E"),
    ("I cannot decide", "choice", None),
    ("\\boxed{x^2 + 2x + 1}", "boxed", "x^2+2x+1"),
    ("The answer is 5", "boxed", None),
    ("```js\nconsole.log(1)\n```", "code", "console.log(1)"),
    ("no code", "code", None),
    ("  Hello   World. ", "text", "hello world"),
    (CODE_REPLY, "auto", "def add(a, b):\n    return a + b"),
])
def test_extract_answer_formats(text, answer_format, expected):
    assert extract_answer(text, answer_format) == expected


def test_extract_answer_rejects_unknown_format():
    with pytest.raises(ValueError, match="answer_format"):
        extract_answer("42", "roman")
    assert set(ANSWER_FORMATS) == {"auto", "boxed", "number", "choice", "code", "text"}


@pytest.mark.parametrize("raw, expected", [
    ("1,234.0 dollars", "1234"), ("50%", "50"), ("50\\%", "50"), ("$18.00", "18"),
    ("-$5", "-5"), ("0.50", "0.5"), (".5", "0.5"), ("7.", "7"), ("\u22123", "-3"),
    ("12 km/h", "12"), ("5 m", "5"), ("5x", "5x"), ("x + 1", "x+1"),
    ("$\\dfrac{1}{2}$", "\\frac{1}{2}"), ("\\text{Paris}", "paris"), ("  New   York ", "new york"),
    ("C", "C"), ("\\pi r^2", "\\pi r^2"), ("-0", "0"), ("2**3", "2**3"),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected
    assert normalize(expected) == expected  # idempotent


def test_boxed_and_code_helpers():
    assert last_boxed("\\boxed{a} and \\boxed{{b}+1}") == "{b}+1"
    assert last_boxed("\\boxed{never closed") is None and last_boxed("none") is None
    assert last_code_block("```\nx\n```\n```py\ny\n") == "y\n"
    assert normalize("  def f():  \n      return 1\n") == "def f():\n    return 1"


# -- equivalence ------------------------------------------------------------------------------

@pytest.fixture
def math_verify():
    return pytest.importorskip("math_verify")


@pytest.fixture
def without_math_verify(monkeypatch):
    """Simulate the proxy-only install: ``import math_verify`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "math_verify", None)
    assert not answers.math_verify_available()


@pytest.mark.parametrize("a, b", [
    ("1/2", "0.5"), ("\\frac{1}{2}", "0.5"), ("\\dfrac{1}{2}", "1/2"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"), ("x+1", "1+x"), ("2^{10}", "1024"),
    ("5!", "120"), ("1,000", "1000"),
])
def test_mathematically_equivalent(math_verify, a, b):
    assert answers.math_verify_available()
    assert equivalent(a, b)


@pytest.mark.parametrize("a, b", [
    ("3", "4"), ("A", "B"), ("paris", "sirap"),  # math-verify alone calls the last pair equal
    ("\\frac{1}{3}", "0.5"), ("x+1", "x-1"),
])
def test_not_equivalent(math_verify, a, b):
    assert not equivalent(a, b)


def test_without_math_verify_equivalence_is_normalised_string_equality(without_math_verify):
    assert equivalent("1,000", "1000") and equivalent("$5", "5.00")
    assert not equivalent("1/2", "0.5")
    result = vote(["\\frac{1}{2}", "0.5", "3", "3", "1/2"])
    assert result.answer == "3" and result.tally == {"\\frac{1}{2}": 1, "0.5": 1, "3": 2,
                                                     "1/2": 1}


def test_vote_groups_equivalent_answers(math_verify):
    result = vote(["\\frac{1}{2}", "0.5", "3", "3", None, "1/2"])
    assert result.answer == "\\frac{1}{2}" and result.index == 0
    assert result.tally == {"\\frac{1}{2}": 3.0, "3": 2.0}
    assert result.members == (0, 1, 5) and result.weight == 3.0 and result.share == 0.5
    assert result.groups == (0, 0, 2, 2, None, 0)
    assert group_answers(["1/2", None, "0.5", "3"]) == [0, None, 0, 3]


def test_equivalence_compares_distinct_groups_only(math_verify, monkeypatch):
    parsed = []
    real_parse = math_verify.parse

    @functools.wraps(real_parse)  # keeps the signature: its timeout parameter is found
    def parse(pred, **kwargs):
        parsed.append(pred)
        return real_parse(pred, **kwargs)

    monkeypatch.setattr(math_verify, "parse", parse)
    result = vote(["1/2"] * 40 + ["0.5"] * 30 + ["\\frac{1}{2}"] * 30)
    assert result.weight == 100 and sorted(parsed) == ["$0.5$", "$1/2$", "$\\frac{1}{2}$"]
    parsed.clear()
    assert vote(["4", "4.0", "5", "1,000", "1000"]).answer == "4"
    assert parsed == []  # plain numbers: their normalised strings decide, no parsing at all


# -- bounded time and threads -----------------------------------------------------------------

ADVERSARIAL = {  # ~400 kB each; a pattern with nested quantifiers would take minutes
    "unclosed boxes": "\\boxed{" * 60_000,
    "deep braces": "\\boxed{" + "{" * 200_000 + "}" * 200_000 + "}",
    "answer words and spaces": ("final answer" + " " * 1000) * 400,
    "answer is and tabs": ("answer is" + "\t" * 1000 + "*" * 1000) * 200,
    "colons": ("answer:" + " :" * 1000) * 200,
    "hashes": "####" * 100_000,
    "digits": "1" * 400_000,
    "commas": "1," * 200_000,
    "fences": "```\n" * 100_000,
    "minus signs": "-" * 400_000 + "5",
    "stars": "*" * 400_000,
    "dollars": "$" * 400_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_extraction_time_is_bounded_on_adversarial_text(name):
    text = ADVERSARIAL[name]
    for answer_format in ANSWER_FORMATS:
        start = time.monotonic()
        extract_answer(text, answer_format)
        assert time.monotonic() - start < 2.0, (name, answer_format)


def test_explosive_expressions_never_reach_sympy(math_verify):
    # each of these would hold the GIL for minutes inside sympy/big-int arithmetic
    towers = ["9^{9^{9}}", "2^{100000000}", "(10^{10})!", "10^{10^{10}}",
              "123456789^{987654}", "99999999999999999999^{99}"]
    start = time.monotonic()
    result = vote(towers + ["\\frac{1}{2}", "0.5"])
    assert time.monotonic() - start < 5.0
    assert result.answer == "\\frac{1}{2}" and result.weight == 2
    assert not equivalent("9^{9^{9}}", "2^{100000000}")


def test_a_slow_equivalence_check_is_abandoned_at_the_timeout(math_verify, monkeypatch):
    release = threading.Event()

    @functools.wraps(math_verify.parse)
    def stuck_parse(pred, **kwargs):
        release.wait(30)
        return []

    monkeypatch.setattr(math_verify, "parse", stuck_parse)
    try:
        start = time.monotonic()
        assert not equivalent("1/2", "0.5", timeout=0.3)
        assert time.monotonic() - start < 1.5
    finally:
        release.set()  # let the abandoned worker finish (it holds the process-wide slot)


def test_no_signal_error_off_the_main_thread(math_verify):
    # math-verify's own timeout (signal.alarm) raises ValueError outside the main thread
    results, errors = [], []

    def work():
        try:
            results.append(equivalent("\\frac{1}{2}", "0.5"))
            results.append(vote(["1/2", "0.5", "3"]).weight)
            results.append(extract_answer("The answer is \\boxed{\\frac{1}{2}}"))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(30)
    assert errors == [] and results == [True, 2.0, "\\frac{1}{2}"]


def test_main_thread_calls_leave_sigalrm_alone(math_verify):
    # (pytest-timeout's timer may be running: it must survive, so only read it here)
    handler, (timer, _) = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
    assert equivalent("2^{-1}", "0.5")
    assert signal.getsignal(signal.SIGALRM) is handler
    assert (signal.getitimer(signal.ITIMER_REAL)[0] > 0) == (timer > 0)


def test_concurrent_votes_all_merge(math_verify):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: vote([f"\\frac{{{i}}}{{2}}", f"{i / 2}", "-1"]),
                                range(1, 17)))
    assert [r.weight for r in results] == [2.0] * 16


# -- voting -----------------------------------------------------------------------------------

def test_vote_counts_and_ties():
    result = vote(["4", "5", "4", None, "5"])
    assert result.answer == "4" and result.index == 0  # tie: the answer reached first
    assert result.tally == {"4": 2.0, "5": 2.0} and result.share == pytest.approx(0.4)
    empty = vote([None, None])
    assert empty.answer is None and empty.index == -1 and empty.tally == {}
    assert vote([]).answer is None


def test_weighted_vote():
    result = vote(["4", "5", "4", "5", "5"], [0.9, 0.1, 0.8, 0.2, 0.3])
    assert result.answer == "4" and result.weight == pytest.approx(1.7)
    assert result.share == pytest.approx(1.7 / 2.3) and result.members == (0, 2)
    with pytest.raises(ValueError, match="length"):
        vote(["4", "5"], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        vote(["4", "5"], [1.0, -1.0])


def test_confidence_weight():
    entries = [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.5}]
    assert confidence_weight(entries) == pytest.approx(2.718281828 ** -1.0)
    assert confidence_weight({"content": entries, "refusal": None}) == confidence_weight(entries)
    assert confidence_weight(None) == 0.0 and confidence_weight({"content": None}) == 0.0
