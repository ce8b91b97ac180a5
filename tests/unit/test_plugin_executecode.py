"""``executecode``: code from the request or written by the model runs in the sandbox, its
output reaches the final call; no code, garbage replies, network and time limits, options,
a chain."""

import socket

from optillm.plugins.executecode import extract_code

from ..conftest import chat

CODE_Q = "What does this print?\n```python\nx = 6 * 7\nprint(x)\n```"


def final_prompt(fake):
    return fake.history[-1].messages[-1].text


def test_code_in_the_request_runs_and_its_output_is_used(client, fake):
    fake.enqueue("It prints 42.")
    r = chat(client, model="executecode-fake", content=CODE_Q, temperature=0.4)
    assert r.status_code == 200, r.get_json()
    assert len(fake.history) == 1
    prompt = final_prompt(fake)
    assert prompt.startswith(CODE_Q) and "Output:\n```\n42\n```" in prompt
    assert fake.history[0].params["temperature"] == 0.4
    choice = r.get_json()["choices"][0]
    assert choice["message"]["content"] == "It prints 42."
    meta = choice["optillm_executecode"]
    assert meta["source"] == "request" and meta["stdout"] == "42\n" and meta["ok"] is True


def test_model_writes_the_code_when_the_request_has_none(client, fake):
    fake.enqueue("Here:\n```python\nprint(sum(range(101)))\n```", "5050")
    r = chat(client, model="executecode-fake", content="Sum 0..100?")
    assert r.status_code == 200
    assert len(fake.history) == 2
    assert "Write a short, self-contained Python 3 program" in fake.history[0].messages[-1].text
    assert fake.history[0].params["temperature"] == 0.2
    assert "5050" in final_prompt(fake)
    assert r.get_json()["choices"][0]["optillm_executecode"]["source"] == "model"


def test_garbage_instead_of_code_still_answers(client, fake):
    fake.enqueue("I think the answer is big.", "big")
    r = chat(client, model="executecode-fake", content="Sum 0..100?")
    assert r.status_code == 200 and len(fake.history) == 2
    assert final_prompt(fake) == "Sum 0..100?"
    assert r.get_json()["choices"][0]["optillm_executecode"]["source"] is None


def test_write_code_off_makes_one_plain_call(client, fake):
    r = chat(client, model="executecode-fake", content="Hi", executecode_write_code=False)
    assert r.status_code == 200 and len(fake.history) == 1
    assert final_prompt(fake) == "Hi"


def test_failing_code_error_reaches_the_prompt(client, fake):
    r = chat(client, model="executecode-fake",
             content="```python\nprint('a')\nraise ValueError('bad value')\n```")
    meta = r.get_json()["choices"][0]["optillm_executecode"]
    assert meta["ok"] is False and "bad value" in meta["error"]
    assert "The program failed" in final_prompt(fake) and "bad value" in final_prompt(fake)


def test_network_is_refused(client, fake):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), 2)\n"
                f"print('connected')")
        r = chat(client, model="executecode-fake", content=f"```python\n{code}\n```")
    finally:
        listener.close()
    meta = r.get_json()["choices"][0]["optillm_executecode"]
    assert meta["ok"] is False and "connected" not in meta["stdout"]


def test_long_runs_are_killed(client, fake):
    r = chat(client, model="executecode-fake", content="```python\nwhile True:\n    pass\n```",
             executecode_timeout=1)
    meta = r.get_json()["choices"][0]["optillm_executecode"]
    assert meta["timed_out"] is True and meta["duration_s"] < 5
    assert "timed out" in final_prompt(fake)


def test_extract_code():
    assert extract_code("```py\na=1\n```\ntext\n```\nprint(a)\n```") == "a=1\n\nprint(a)"
    assert extract_code("```bash\nls\n```") is None
    assert extract_code("```\nnot python at all (\n```") is None
    assert extract_code("print(1)") is None and extract_code("print(1)", bare=True) == "print(1)"
    assert extract_code("```python\nprint(2)") == "print(2)"  # an unclosed fence




def test_in_a_chain(client, fake):
    fake.enqueue("The result is 42.", "final")
    r = chat(client, model="executecode&re2-fake", content=CODE_Q)
    assert r.status_code == 200 and len(fake.history) == 2
    assert "42" in fake.history[0].messages[-1].text
    assert fake.history[1].messages[-1].text.startswith("The result is 42.")
