"""``coc`` (Chain of Code): executed when the code runs, fixed after a failure, emulated by the
model when no run succeeds; call counts per path, the prompts, malformed replies, options,
reasoning and a chain."""

from optillm.plugins.coc import emulated_output

from ..conftest import chat


def is_write(r):
    return "Solve the problem below by writing Python" in r.messages[-1].text


def is_fix(r):
    return "This program for the problem below failed" in r.messages[-1].text


def is_emulate(r):
    return "Act as a Python interpreter" in r.messages[-1].text


def is_answer(r):
    return "give the final answer" in r.messages[-1].text


def kinds(fake):
    out = []
    for r in fake.history:
        for name, pred in (("write", is_write), ("fix", is_fix), ("emulate", is_emulate),
                           ("answer", is_answer)):
            if pred(r):
                out.append(name)
    return out


def test_code_runs_two_calls(client, fake):
    fake.enqueue("```python\nprint(17 * 3)\n```", "51")
    r = chat(client, model="coc-fake", content="What is 17*3?", return_full_response=True)
    assert r.status_code == 200, r.get_json()
    assert kinds(fake) == ["write", "answer"]
    assert fake.history[0].params["temperature"] == 0.2
    assert "What is 17*3?" in fake.history[0].messages[-1].text
    assert "Executing it printed:\n```\n51\n```" in fake.history[1].messages[-1].text
    choice = r.get_json()["choices"][0]
    assert choice["optillm_coc"]["mode"] == "executed"
    assert choice["message"]["content"].startswith("```python\nprint(17 * 3)")  # the trace


def test_failure_then_fix(client, fake):
    fake.enqueue("```python\nprint(undefined_name)\n```", "```python\nprint(2 + 2)\n```", "4")
    r = chat(client, model="coc-fake", content="2+2?")
    assert kinds(fake) == ["write", "fix", "answer"]
    fix_prompt = fake.history[1].messages[-1].text
    assert "NameError" in fix_prompt and "print(undefined_name)" in fix_prompt
    meta = r.get_json()["choices"][0]["optillm_coc"]
    assert meta["mode"] == "executed" and len(meta["attempts"]) == 2
    assert meta["attempts"][0]["ok"] is False and meta["attempts"][1]["stdout"] == "4\n"


def test_every_run_fails_the_model_emulates(client, fake):
    code = "```python\nanswer = is_sarcastic('great, more rain')\nprint(answer)\n```"
    fake.when(is_write, code)
    fake.when(is_fix, code)
    fake.when(is_emulate, "is_sarcastic returns True\nOutput: True")
    fake.when(is_answer, "Yes, sarcastic.")
    r = chat(client, model="coc-fake", content="Is it sarcastic?", coc_max_attempts=3)
    assert r.status_code == 200, r.get_json()
    assert kinds(fake) == ["write", "fix", "fix", "emulate", "answer"]  # 3 + 2 calls
    assert fake.history[3].params["temperature"] == 0.0
    assert "is_sarcastic('great, more rain')" in fake.history[3].messages[-1].text
    assert "emulated" in fake.history[4].messages[-1].text
    assert "```\nTrue\n```" in fake.history[4].messages[-1].text
    meta = r.get_json()["choices"][0]["optillm_coc"]
    assert meta["mode"] == "emulated" and meta["output"] == "True"
    assert len(meta["attempts"]) == 3


def test_garbage_replies_never_crash(client, fake):
    fake.enqueue("no idea", "still no code", "hmm", "final")
    r = chat(client, model="coc-fake", content="?", coc_max_attempts=2)
    assert r.status_code == 200
    assert kinds(fake) == ["write", "fix", "emulate", "answer"]
    meta = r.get_json()["choices"][0]["optillm_coc"]
    assert meta["attempts"][0]["error"] == "no code in the reply"
    assert meta["output"] == "hmm"


def test_one_attempt_timeout_goes_to_emulation(client, fake):
    fake.enqueue("```python\nwhile True:\n    pass\n```", "Output: 0", "done")
    r = chat(client, model="coc-fake", content="loop", coc_max_attempts=1, coc_timeout=1)
    assert kinds(fake) == ["write", "emulate", "answer"]
    assert r.get_json()["choices"][0]["optillm_coc"]["attempts"][0]["timed_out"] is True


def test_emulated_output():
    assert emulated_output("trace...\nOutput: 42\n") == "42"
    assert emulated_output("OUTPUT:\n```\n7\n```") == "7"
    assert emulated_output("just\nlast line") == "last line"
    assert emulated_output("") == ""


def test_in_a_chain(client, fake):
    fake.enqueue("What is 5*5?", "```python\nprint(5*5)\n```", "25")
    r = chat(client, model="re2&coc-fake", content="five squared")
    assert r.status_code == 200 and len(fake.history) == 3
    assert "What is 5*5?" in fake.history[1].messages[-1].text
    assert r.get_json()["choices"][0]["message"]["content"] == "25"
