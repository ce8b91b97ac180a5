"""``z3`` (solver programs run in the sandbox, repaired on error), ``rto`` (round trip through a
specification) and ``plansearch`` (observations, derived observations, plans, code): call
patterns, prompt contents, malformed replies, options, concurrency, usage and budget."""

from __future__ import annotations

import threading

import pytest

from optillm.approaches.plansearch import focus, parse_observations
from optillm.approaches.rto import extract_code, normalize_code
from optillm.approaches.z3_solver import extract_program, parse_yes_no
from optillm.types import Usage

from ..fakes import FakeUpstream
from .test_streaming import events

SYSTEM = "You are terse."


class RecordingFake(FakeUpstream):
    """A fake that also keeps the usage of every reply, to check the response's sum."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.usages: list[Usage] = []
        self._usage_lock = threading.Lock()

    def _reply(self, request):
        completion = super()._reply(request)
        with self._usage_lock:
            self.usages.append(completion.usage)
        return completion


@pytest.fixture
def fake():
    return RecordingFake()


def ask(client, model, content="Find x and y with x + y = 10 and x - y = 2.", **body):
    payload = {"model": model, "messages": [{"role": "system", "content": SYSTEM},
                                            {"role": "user", "content": content}], **body}
    return client.post("/v1/chat/completions", json=payload)


def last(request) -> str:
    return request.messages[-1].content


def assert_usage_sum(data, fake):
    usage = data["usage"]
    assert usage["prompt_tokens"] == sum(u.prompt_tokens for u in fake.usages) > 0
    assert usage["completion_tokens"] == sum(u.completion_tokens for u in fake.usages) > 0


# -- z3 ---------------------------------------------------------------------------------------

def is_triage(r):
    return "Reply with YES or NO" in last(r)


def is_code(r):
    return "Write a self-contained Python program" in r.messages[-1].content \
        or "Running that program failed" in last(r)


def is_answer(r):
    return "A solver program was written and run" in last(r)


GOOD = "Here:\n```python\nfrom z3 import Int, Solver\nx, y = Int('x'), Int('y')\ns = Solver()\n" \
       "s.add(x + y == 10, x - y == 2)\ns.check()\nm = s.model()\nprint(m[x], m[y])\n```"


def test_parse_yes_no_tolerates_garbage():
    assert parse_yes_no("YES") and parse_yes_no("**Yes**.") and parse_yes_no("I think yes")
    assert not parse_yes_no("No, because") and not parse_yes_no("Nope") and not parse_yes_no("")
    assert not parse_yes_no("yesterday: no") and not parse_yes_no(None)
    assert not parse_yes_no("No. Well, yes")


def test_extract_program():
    assert extract_program("```python\nprint(1)\n```\ntext") == "print(1)"
    assert extract_program("import sympy\nprint(sympy.pi)") == "import sympy\nprint(sympy.pi)"
    assert extract_program("I cannot write that program.") is None
    assert extract_program("```python\nprint(2)") == "print(2)"  # unclosed fence


def test_z3_solver_used(client, fake, openapi):
    fake.when(is_triage, "Yes.").when(is_code, GOOD).when(is_answer, "x is 6 and y is 4")
    r = ask(client, "z3-fake", temperature=0.7, return_full_response=True)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    openapi(data, "CreateChatCompletionResponse")
    assert len(fake.history) == 3
    triage, code, answer = fake.history
    assert is_triage(triage) and is_code(code) and is_answer(answer)
    assert triage.params["temperature"] == 0.0 and triage.params["max_tokens"] == 16
    assert code.params["temperature"] == 0.7  # the client's sampling reaches the program
    assert all(h.messages[0].content == SYSTEM for h in fake.history)
    assert "```\n6 4\n```" in last(answer) and "x + y = 10" in last(answer)
    meta = data["choices"][0]["optillm_z3"]
    assert meta == {"suitable": True, "solver_used": True, "attempts": 1, "output": "6 4",
                    "errors": []}
    full = data["choices"][0]["message"]["content"]  # the trace, with return_full_response
    assert "print(m[x], m[y])" in full and "Output:\n6 4" in full and "x is 6 and y is 4" in full
    assert_usage_sum(data, fake)


def test_z3_repairs_a_failing_program(client, fake):
    fake.when(is_triage, "YES").when(is_answer, "six and four")
    fake.when(lambda r: "Running that program failed" in last(r), GOOD)
    fake.when(is_code, "```python\nprint(1 / 0)\n```")
    r = ask(client, "z3-fake")
    data = r.get_json()
    assert data["choices"][0]["message"]["content"] == "six and four"
    assert len(fake.history) == 4
    repair = fake.history[2]
    assert "ZeroDivisionError: division by zero" in last(repair)
    assert repair.messages[-2].role == "assistant" and "1 / 0" in repair.messages[-2].content
    meta = data["choices"][0]["optillm_z3"]
    assert meta["attempts"] == 2 and meta["solver_used"] and meta["output"] == "6 4"
    assert meta["errors"] == ["ZeroDivisionError: division by zero"]


def test_z3_gives_up_after_max_attempts_and_answers_plainly(client, fake):
    fake.when(is_triage, "yes").when(is_answer, "never")
    fake.enqueue("I would use z3 here.", "```python\nwhile True:\n    pass\n```",
                 "plain answer")
    r = ask(client, "z3-fake", z3_max_attempts=2, z3_timeout=1)
    data = r.get_json()
    assert r.status_code == 200, data
    assert data["choices"][0]["message"]["content"] == "plain answer"
    assert len(fake.history) == 1 + 2 + 1
    final = fake.history[-1]
    assert [m.content for m in final.messages] == [SYSTEM, fake.history[0].messages[-1]
                                                   .content.split("Problem:\n")[1]]
    assert "no Python code block" in last(fake.history[2])
    meta = data["choices"][0]["optillm_z3"]
    assert meta["solver_used"] is False and meta["attempts"] == 2 and meta["output"] is None
    assert meta["errors"][0] == "the reply contained no Python code block"
    assert meta["errors"][1].startswith("timed out after 1s")


def test_z3_unsuitable_or_garbage_triage_answers_plainly(client, fake):
    fake.enqueue("%%$# maybe??", "the answer")
    r = ask(client, "z3-fake", content="Write me a poem.")
    data = r.get_json()
    assert data["choices"][0]["message"]["content"] == "the answer"
    assert len(fake.history) == 2
    assert last(fake.history[1]) == "Write me a poem."
    assert data["choices"][0]["optillm_z3"]["suitable"] is False
    assert data["choices"][0]["optillm_z3"]["attempts"] == 0
    assert_usage_sum(data, fake)


def test_z3_final_call_streams(client, fake):
    fake.when(is_triage, "NO").when(lambda r: True, "streamed plain answer")
    r = ask(client, "z3-fake", stream=True)
    _, data, done = events(r.data)
    assert done
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in data if c["choices"])
    assert text == "streamed plain answer"
    assert len([d for d in data if d["choices"] and d["choices"][0]["delta"].get("content")]) > 1


def test_z3_nested_options(client, fake):
    fake.when(is_triage, "yes").when(is_code, "no code").when(lambda r: True, "done")
    ask(client, "z3-fake", optillm={"z3_max_attempts": 1})
    assert len(fake.history) == 3


# -- rto --------------------------------------------------------------------------------------

C1 = "Solution:\n```python\ndef add(a, b):\n    return a + b\n```"
C2_SAME = "```\ndef add(a,  b):\n  return a + b   \n\n```"
C2_OTHER = "```python\ndef add(a, b):\n    return sum([a, b])\n```"


def rto_script(fake, c2):
    fake.when(lambda r: "Describe precisely" in last(r), "A function add(a, b) returning a+b.")
    fake.when(lambda r: "A function add(a, b)" in last(r), c2)
    fake.when(lambda r: "Two candidate solutions" in last(r), "merged version")
    fake.when(lambda r: True, C1)


def test_normalize_and_extract_code():
    assert normalize_code("def f():\n        return 1   \n\n") == normalize_code(
        "def f():\n  return 1")
    assert normalize_code("x = 1") != normalize_code("x=1")
    assert extract_code("no fences here ") == "no fences here"
    assert extract_code(C1) == "def add(a, b):\n    return a + b"


def test_rto_identical_round_trip_returns_c1(client, fake, openapi):
    rto_script(fake, C2_SAME)
    r = ask(client, "rto-fake", content="Write add(a, b).")
    data = r.get_json()
    openapi(data, "CreateChatCompletionResponse")
    assert data["choices"][0]["message"]["content"] == C1
    assert len(fake.history) == 3
    c1, describe, c2 = fake.history
    assert "Write add(a, b)." in last(c1)
    assert "return a + b" in last(describe)
    assert "A function add(a, b) returning a+b." in last(c2) and "Write add(a, b)." not in last(c2)
    assert all(h.messages[0].content == SYSTEM for h in fake.history)
    meta = data["choices"][0]["optillm_rto"]
    assert meta["identical"] is True and meta["specification"].startswith("A function add")
    assert_usage_sum(data, fake)


def test_rto_different_versions_are_merged(client, fake):
    rto_script(fake, C2_OTHER)
    r = ask(client, "rto-fake", content="Write add(a, b).", return_full_response=True)
    data = r.get_json()
    assert len(fake.history) == 4
    merge = last(fake.history[3])
    assert "Write add(a, b)." in merge and "return a + b" in merge and "sum([a, b])" in merge
    choice = data["choices"][0]
    assert choice["optillm_rto"]["identical"] is False
    assert choice["message"]["content"].endswith("Merged:\nmerged version")  # the trace
    assert "Specification (Q2):" in choice["message"]["content"]
    assert_usage_sum(data, fake)


def test_rto_tolerates_replies_without_code(client, fake):
    fake.enqueue("I don't know", "", "I don't know", "whatever")
    r = ask(client, "rto-fake")
    assert r.status_code == 200
    assert r.get_json()["choices"][0]["message"]["content"] == "I don't know"
    assert len(fake.history) == 3


# -- plansearch -------------------------------------------------------------------------------

OBSERVATIONS = ("Sure! Observations:\n1. **The input is sorted.**\n2) Duplicates may occur\n"
                "- Binary search applies\n* \n3. The input is sorted.\n")
DERIVED = "Observation 1: Sorted input + binary search gives O(log n)\nbinary search applies"


def plan_script(fake):
    fake.when(lambda r: "List several useful" in last(r), OBSERVATIONS)
    fake.when(lambda r: "derive new, deeper" in last(r), DERIVED)
    fake.when(lambda r: "step-by-step plan" in last(r),
              lambda r: "PLAN focusing on " + last(r).split("mainly on: ")[1].split("\n")[0])
    fake.when(lambda r: "Implement this plan" in last(r),
              lambda r: "```python\n# " + last(r).split("PLAN focusing on ")[1].split("\n")[0]
              + "\n```")


def test_parse_observations():
    assert parse_observations(OBSERVATIONS) == ["The input is sorted.", "Duplicates may occur",
                                                "Binary search applies"]
    assert parse_observations("(1) a thing\n(2) another thing") == ["a thing", "another thing"]
    assert parse_observations("Paragraph one is long enough.\n\nok\n\nParagraph two too.") == [
        "Paragraph one is long enough.", "Paragraph two too."]
    assert parse_observations("") == [] and parse_observations(None) == []
    assert len(parse_observations("\n".join(f"{i}. item {i}" for i in range(1, 20)))) == 8


def test_focus_cycles_over_singles_then_pairs():
    obs = ["a", "b", "c"]
    assert [focus(obs, i) for i in range(7)] == [["a"], ["b"], ["c"], ["a", "b"], ["a", "c"],
                                                 ["b", "c"], ["a"]]
    assert focus([], 3) == []


def test_plansearch_single_solution(client, fake, openapi):
    plan_script(fake)
    r = ask(client, "plansearch-fake", content="Find a value in a list.",
            return_full_response=True)
    data = r.get_json()
    openapi(data, "CreateChatCompletionResponse")
    assert len(fake.history) == 4
    obs, derived, plan, code = fake.history
    assert "Find a value in a list." in last(obs)
    assert "1. The input is sorted.\n2. Duplicates may occur\n3. Binary search applies" \
        in last(derived)
    assert "mainly on: The input is sorted." in last(plan)
    assert "4. Sorted input + binary search gives O(log n)" in last(plan)
    assert "PLAN focusing on The input is sorted." in last(code)
    assert all(h.messages[0].content == SYSTEM for h in fake.history)
    choice = data["choices"][0]
    meta = choice["optillm_plansearch"]
    assert meta["observations"] == ["The input is sorted.", "Duplicates may occur",
                                    "Binary search applies"]
    assert meta["derived_observations"] == ["Sorted input + binary search gives O(log n)"]
    assert meta["solutions"][0]["code"] == "# The input is sorted."
    assert choice["message"]["content"].startswith("Observations:\n1. The input is sorted.")
    assert_usage_sum(data, fake)


def test_plansearch_solutions_run_concurrently(make_app):
    fake = RecordingFake(delay=0.15)
    plan_script(fake)
    client = make_app(upstream=fake).test_client()
    r = ask(client, "plansearch-fake", plansearch_n=3)
    data = r.get_json()
    assert r.status_code == 200, data
    assert len(fake.history) == 2 + 2 * 3
    assert fake.max_active >= 3
    sols = data["choices"][0]["optillm_plansearch"]["solutions"]
    assert [s["focus"] for s in sols] == [["The input is sorted."], ["Duplicates may occur"],
                                          ["Binary search applies"]]
    assert data["choices"][0]["message"]["content"] == "```python\n# The input is sorted.\n```"
    assert_usage_sum(data, fake)


def test_plansearch_garbage_lists_still_answer(client, fake):
    fake.enqueue("", "???", "a plan", "no code at all")
    r = ask(client, "plansearch-fake")
    data = r.get_json()
    assert r.status_code == 200
    assert data["choices"][0]["message"]["content"] == "no code at all"
    meta = data["choices"][0]["optillm_plansearch"]
    assert meta["observations"] == [] and meta["solutions"][0]["code"] is None
    assert "mainly on" not in last(fake.history[2]) and "(none)" in last(fake.history[2])


def test_plansearch_budget_stops_the_search(client, fake):
    plan_script(fake)
    r = ask(client, "plansearch-fake", plansearch_n=2, max_upstream_calls=3)
    assert r.status_code == 400
    assert r.get_json()["error"]["code"] == "budget_exceeded"
    assert len(fake.history) <= 4
