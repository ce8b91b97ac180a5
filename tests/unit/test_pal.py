"""``pal`` (program-aided, voted on printed answers) over the scripted upstream: one call with
n=k, programs really run in the sandbox, the vote, the reply's shape, the fallback, options
and malformed samples."""

from __future__ import annotations

import pytest

from optillm.approaches.pal import WRITE_PROMPT, printed_answer

from ..conftest import chat


def program(expr: str) -> str:
    return f"Here it is.\n```python\nvalue = {expr}\nprint(value)\n```"


def pal_meta(response) -> dict:
    return response.get_json()["choices"][0]["optillm_pal"]


def test_printed_answer_reads_the_last_line_and_rounds_floats():
    assert printed_answer("working...\n18\n") == "18"
    assert printed_answer("17.999999999999996\n") == "18"
    assert printed_answer("The total is $1,234.50\n") == "1234.5"
    assert printed_answer("3.25") == "3.25"
    assert printed_answer("") is None and printed_answer("\n  \n") is None
    assert printed_answer("no digits here") is None


def test_one_call_with_n_programs_run_and_voted(client, fake):
    fake.when(lambda r: r.n == 5, [program("6 * 3"), program("20 - 2"), program("5 + 5"),
                                   program("9 * 2.0"), "I think it is 10."])
    r = chat(client, model="pal-fake", content="Tom has 6 bags of 3 apples. How many?",
             messages=[{"role": "system", "content": "End with The answer is N."},
                       {"role": "user", "content": "Tom has 6 bags of 3 apples. How many?"}])
    assert r.status_code == 200, r.get_json()
    (call,) = fake.history
    assert call.n == 5 and call.params["temperature"] == 0.6
    assert [m.role for m in call.messages] == ["user"]  # the client's system message dropped
    assert call.messages[-1].text == WRITE_PROMPT.format(
        query="Tom has 6 bags of 3 apples. How many?")
    meta = pal_meta(r)
    assert meta["answers"] == ["18", "18", "10", "18", None]
    assert meta["votes"] == {"18": 3, "10": 1} and meta["winner"] == "18"
    assert meta["programs"] == 4 and meta["chosen"] == 0 and not meta["fallback"]
    assert meta["agreement"] == pytest.approx(0.6)
    assert all(run["ok"] for run in meta["runs"])
    content = r.get_json()["choices"][0]["message"]["content"]
    assert content.startswith("```python\nvalue = 6 * 3\nprint(value)\n```")
    assert content.rstrip().endswith("The answer is 18.")
    assert r.get_json()["usage"]["completion_tokens"] > 0


def test_identical_programs_run_once_and_failures_do_not_vote(client, fake):
    broken = "```python\nprint(1 / 0)\n```"
    fake.when(lambda r: r.n == 4, [program("2 + 2")] * 3 + [broken])
    meta = pal_meta(chat(client, model="pal-fake", pal_k=4))
    assert meta["programs"] == 2 and meta["answers"] == ["4", "4", "4", None]
    failed = [run for run in meta["runs"] if not run["ok"]]
    assert len(failed) == 1 and "ZeroDivisionError" in (failed[0]["error"] or "")


def test_no_program_answers_falls_back_to_a_direct_answer(client, fake):
    fake.when(lambda r: r.n == 3, ["no code", "```python\nx = 1\n```",
                                   "```python\nwhile True: pass\n```"])
    fake.when(lambda r: r.n == 1, "The answer is 4.")
    r = chat(client, model="pal-fake", pal_k=3, pal_timeout=1, temperature=0.3,
             messages=[{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "What is 2+2?"}])
    assert r.status_code == 200, r.get_json()
    assert [c.n for c in fake.history] == [3, 1]
    assert fake.history[0].params["temperature"] == 0.3  # the client's, when it sent one
    direct = fake.history[1]
    assert [m.role for m in direct.messages] == ["system", "user"]
    assert direct.messages[-1].text == "What is 2+2?"
    meta = pal_meta(r)
    assert meta["fallback"] is True and meta["winner"] is None
    assert meta["answers"] == [None, None, None]
    assert any("time" in (run["error"] or "").lower() for run in meta["runs"])
    assert r.get_json()["choices"][0]["message"]["content"] == "The answer is 4."


def test_fallback_off_says_so_in_one_call(client, fake):
    fake.when(lambda r: r.n == 2, ["nothing", "still nothing"])
    r = chat(client, model="pal-fake", pal_k=2, pal_fallback=False)
    assert len(fake.history) == 1
    assert r.get_json()["choices"][0]["message"]["content"] == "No program printed an answer."


def test_k1_is_greedy_by_default(client, fake):
    fake.when(lambda r: r.n == 1, program("7 * 6"))
    r = chat(client, model="pal-fake", pal_k=1)
    assert fake.history[0].params["temperature"] == 0.0
    assert pal_meta(r)["winner"] == "42"


def is_program_call(request) -> bool:
    return request.messages[-1].text.startswith("Problem:")


def test_prose_answers_vote_with_the_programs_and_win_ties(client, fake):
    fake.when(is_program_call, [program("6 * 3"), program("6 + 3")])
    fake.when(lambda r: not is_program_call(r), "6 bags of 3 is 19.\nThe answer is 19.")
    r = chat(client, model="pal-fake", pal_k=2, pal_prose=1, max_tokens=300,
             messages=[{"role": "system", "content": "Reason step by step."},
                       {"role": "user", "content": "Tom has 6 bags of 3 apples. How many?"}])
    assert r.status_code == 200, r.get_json()
    assert len(fake.history) == 2
    prose = next(c for c in fake.history if not is_program_call(c))
    assert prose.n == 1 and prose.params["temperature"] == 0.0
    assert prose.params["max_tokens"] == 300  # the client's parameters, as sent
    assert [m.role for m in prose.messages] == ["system", "user"]
    meta = pal_meta(r)
    assert meta["prose_answers"] == ["19"] and meta["answers"] == ["19", "18", "9"]
    # three answers one vote each: the tie goes to the prose answer, which comes first
    assert meta["winner"] == "19" and meta["source"] == "prose" and meta["chosen"] == 0
    assert r.get_json()["choices"][0]["message"]["content"].endswith("The answer is 19.")


def test_programs_that_agree_overrule_the_prose_answer(client, fake):
    fake.when(is_program_call, [program("6 * 3"), program("3 * 6"), program("6 + 3")])
    fake.when(lambda r: not is_program_call(r), "The answer is 19.")
    meta = pal_meta(r := chat(client, model="pal-fake", pal_k=3, pal_prose=1))
    assert meta["winner"] == "18" and meta["source"] == "program"
    assert meta["votes"] == {"19": 1, "18": 2, "9": 1} and meta["chosen"] == 1
    content = r.get_json()["choices"][0]["message"]["content"]
    assert content.startswith("```python\nvalue = 6 * 3") and "The answer is 18." in content


def test_prose_without_an_answer_line_is_the_fallback_without_another_call(client, fake):
    fake.when(is_program_call, ["no code here"])
    fake.when(lambda r: not is_program_call(r), ["I am not sure.", "Nor am I."])
    r = chat(client, model="pal-fake", pal_k=1, pal_prose=2, answer_format="number")
    assert len(fake.history) == 2
    prose = next(c for c in fake.history if not is_program_call(c))
    assert prose.n == 2 and prose.params["temperature"] == 0.6
    meta = pal_meta(r)
    assert meta["fallback"] is True and meta["answers"] == [None, None, None]
    assert r.get_json()["choices"][0]["message"]["content"] == "I am not sure."


@pytest.mark.parametrize("body", [{"pal_k": 0}, {"pal_k": 33}, {"pal_timeout": 0.1},
                                  {"pal_memory_mb": 10}, {"answer_format": "prose"},
                                  {"pal_prose": -1}, {"pal_prose": 33}])
def test_bad_options_are_400s(client, fake, body):
    r = chat(client, model="pal-fake", **body)
    assert r.status_code == 400
    assert r.get_json()["error"]["type"] == "invalid_request_error"
    assert not fake.history


def test_the_program_has_no_network(client, fake):
    code = ("```python\nimport socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), 1)\n"
            "    print(1)\nexcept Exception:\n    print(0)\n```")
    fake.when(lambda r: r.n == 1, code)
    assert pal_meta(chat(client, model="pal-fake", pal_k=1))["winner"] == "0"
