"""``spl``: classification, strategy injection into the system prompt, learning (create, then
refine), malformed replies, options, chains, and the store under concurrent threads and
processes."""

import json
import multiprocessing
import threading

import pytest

from optillm.plugins import spl

from ..conftest import chat


def is_classify(r):
    return "Classify the problem" in r.messages[-1].text


def is_learn(r):
    return "library of problem-solving strategies" in r.messages[-1].text


@pytest.fixture
def client(make_app, tmp_path):
    """A server whose data folder (``--data-dir``) is ``tmp_path``: the store is tmp_path/spl."""
    return make_app(data_dir=str(tmp_path)).test_client()


def test_without_strategies_two_calls_nothing_written(client, fake, tmp_path):
    fake.when(is_classify, "arithmetic")
    fake.enqueue("4")
    r = chat(client, model="spl-fake")
    assert r.status_code == 200, r.get_json()
    assert len(fake.history) == 2
    answer_call = fake.history[1]
    assert [m.role for m in answer_call.messages] == ["user"]  # no strategies: no system
    data = r.get_json()
    assert data["choices"][0]["message"]["content"] == "4"
    assert data["choices"][0]["optillm_spl"] == {"problem_type": "arithmetic",
                                                 "strategies_used": [], "learned": None}
    assert not (tmp_path / "spl" / "strategies.json").exists()
    assert data["usage"]["total_tokens"] == sum(
        sum(len(m.text.split()) for m in h.messages) for h in fake.history) + 1 + 1


def test_learn_then_use_then_refine(client, fake, tmp_path):
    fake.when(is_classify, "Type: word problem.")
    fake.when(is_learn, "Strategy: 1. Write down the known quantities. 2. Set up an equation.")
    fake.when(lambda r: True, "the answer")
    system = {"role": "system", "content": "You are terse."}
    q = {"role": "user", "content": "Ann has 3 apples and buys 2. How many?"}
    r = chat(client, model="spl-fake", messages=[system, q], spl_learning=True)
    assert r.status_code == 200, r.get_json()
    meta = r.get_json()["choices"][0]["optillm_spl"]
    assert meta["problem_type"] == "word_problem" and meta["learned"]["refined"] is False
    assert len(fake.history) == 3 and is_learn(fake.history[2])
    assert "Ann has 3 apples" in fake.history[2].messages[-1].text
    store = json.loads((tmp_path / "spl" / "strategies.json").read_text())
    (strategy,) = store["strategies"]
    assert strategy["problem_type"] == "word_problem"
    assert strategy["text"].startswith("1. Write down the known quantities")

    fake.history.clear()
    r = chat(client, model="spl-fake", messages=[system, q], spl_learning=True)
    meta = r.get_json()["choices"][0]["optillm_spl"]
    assert meta["strategies_used"] == [strategy["id"]]
    assert meta["learned"] == {"id": strategy["id"], "refined": True}
    answer_call = fake.history[1]
    sys_text = answer_call.messages[0].text
    assert sys_text.startswith("You are terse.") and "Write down the known quantities" in sys_text
    assert answer_call.messages[1].text == q["content"]  # the conversation is kept
    assert "current strategy for this type" in fake.history[2].messages[-1].text
    store = json.loads((tmp_path / "spl" / "strategies.json").read_text())
    assert len(store["strategies"]) == 1
    assert store["strategies"][0]["refinements"] == 1 and store["strategies"][0]["uses"] == 1


def test_garbage_replies_fall_back(client, fake, tmp_path):
    fake.when(is_classify, "¯\\_(ツ)_/¯ 42")
    fake.when(is_learn, "Strategy: ok")
    fake.when(lambda r: True, "x")
    r = chat(client, model="spl-fake", spl_learning=True)
    assert r.status_code == 200
    meta = r.get_json()["choices"][0]["optillm_spl"]
    assert meta["problem_type"] == "general" and meta["learned"] is None
    assert not (tmp_path / "spl" / "strategies.json").exists()


def test_corrupt_store_is_not_fatal(client, fake, tmp_path):
    (tmp_path / "spl").mkdir()
    (tmp_path / "spl" / "strategies.json").write_text("{not json")
    fake.when(is_classify, "logic")
    fake.when(lambda r: True, "yes")
    assert chat(client, model="spl-fake").status_code == 200


def test_parsers():
    assert spl.parse_type("ALGEBRA") == "algebra"
    assert spl.parse_type("It is a word-problem, maybe logic") == "word_problem"
    assert spl.parse_type("") == "general"
    assert spl.parse_strategy("```Strategy: check each step twice and verify```") == \
        "check each step twice and verify"
    assert spl.parse_strategy("...") is None


def test_options(client, tmp_path):
    assert chat(client, model="spl-fake", spl_learning="yes").status_code == 400
    assert spl.Options().spl_learning is False
    assert spl.store_dir("/srv/data") == "/srv/data/spl"


def test_the_request_cannot_choose_the_store(client, fake, tmp_path):
    """``spl_data_dir`` is no option any more: a body naming a folder writes nothing there."""
    fake.when(is_classify, "logic")
    fake.when(is_learn, "Strategy: 1. List the premises. 2. Check each conclusion.")
    fake.when(lambda r: True, "yes")
    evil = tmp_path / "evil"
    r = chat(client, model="spl-fake", spl_learning=True, spl_data_dir=str(evil),
             optillm={"spl_data_dir": str(evil)})
    assert r.status_code == 200, r.get_json()
    assert not evil.exists() and (tmp_path / "spl" / "strategies.json").exists()


def test_in_a_chain(client, fake, tmp_path):
    fake.when(is_classify, "arithmetic")
    fake.enqueue("Read: 2+2", "4")
    r = chat(client, model="re2&spl-fake")
    assert r.status_code == 200
    assert r.get_json()["choices"][0]["message"]["content"] == "4"
    assert "Read: 2+2" in fake.history[1].messages[-1].text  # re2's answer is spl's query


def _write_many(directory, tag, count):
    store = spl.StrategyStore(directory)
    for i in range(count):
        store.learn("logic", f"strategy {tag}-{i}", None, [])


def test_store_under_concurrent_threads_and_processes(tmp_path):
    directory = str(tmp_path / "store")
    threads = [threading.Thread(target=_write_many, args=(directory, f"t{t}", 10))
               for t in range(4)]
    mp = multiprocessing.get_context("spawn")
    procs = [mp.Process(target=_write_many, args=(directory, f"p{p}", 10)) for p in range(3)]
    for w in threads + procs:
        w.start()
    for w in threads + procs:
        w.join(60)
    assert all(p.exitcode == 0 for p in procs)
    texts = {s["text"] for s in spl.StrategyStore(directory).load()["strategies"]}
    expected = {f"strategy {tag}-{i}" for tag in ["t0", "t1", "t2", "t3", "p0", "p1", "p2"]
                for i in range(10)}
    assert texts == expected  # no update was lost
    assert not [p for p in (tmp_path / "store").iterdir() if p.suffix == ".tmp"]
