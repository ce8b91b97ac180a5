"""The executor's deadlock-free fan-out, answer extraction and the package's public names."""

import threading
import time

import pytest

import optillm
from optillm.concurrency import BoundedExecutor
from optillm.toolkit.answers import extract_answer, last_boxed, normalize


def test_nested_map_does_not_deadlock_on_a_tiny_pool():
    ex = BoundedExecutor(1)
    done = threading.Event()

    def outer(i):
        return sum(ex.map(lambda j: i * j, range(4)))

    def run():
        assert ex.map(outer, range(4)) == [0, 6, 12, 18]
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(5)
    ex.shutdown()


def test_map_runs_concurrently_and_keeps_order():
    ex = BoundedExecutor(8)
    start = time.monotonic()
    out = ex.map(lambda x: (time.sleep(0.2), x)[1], range(6))
    assert out == list(range(6)) and time.monotonic() - start < 0.6
    ex.shutdown()


def test_map_raises_after_all_finished():
    ex = BoundedExecutor(4)
    finished = []

    def work(i):
        if i == 0:
            raise ValueError("first")
        time.sleep(0.1)
        finished.append(i)

    with pytest.raises(ValueError, match="first"):
        ex.map(work, range(4))
    assert sorted(finished) == [1, 2, 3]
    ex.shutdown()


@pytest.mark.parametrize("text, answer", [
    ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
    ("The answer is 1,000.", "1000"),
    ("#### 42", "42"),
    ("blah 3 then 7.0", "7"),
    ("The final answer is: $18.00", "18"),
    ("I pick answer (C).", "C"),
    ("nothing here", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_boxed_and_normalize():
    assert last_boxed("\\boxed{a} and \\boxed{{b}+1}") == "{b}+1"
    assert normalize("1,234.0 dollars") == "1234" and normalize("50%") == "50"


def test_public_names_resolve():
    for name in optillm.__all__:
        assert getattr(optillm, name) is not None
    with pytest.raises(AttributeError):
        optillm.not_a_name  # noqa: B018
