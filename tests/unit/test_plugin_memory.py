"""The ``memory`` plugin: chunked note taking (concurrent), BM25 retrieval, the final call on
the whole conversation, opt-in persistence, option checks and the missing-extra error."""

from __future__ import annotations

import json
import sys

import pytest

from optillm.plugins.memory import chunk_text, parse_notes, rank, split_query

from ..conftest import chat

PARAS = [f"Paragraph {i}. " + ("filler words here. " * 12) for i in range(6)]
DOC = "\n\n".join(PARAS)
QUESTION = "What colour is the dragon?"


def note_for(request):
    """One note per chunk, naming the chunk's first paragraph number."""
    text = request.messages[-1].content
    chunk = text.split("Text:\n", 1)[1]
    return f"- chunk note {chunk.split('.')[0]}\n- NONE"


def is_note_call(r):
    return "write down every fact" in r.messages[-1].content


def test_notes_per_chunk_then_one_final_call(client, fake):
    fake.when(is_note_call, note_for)
    fake.default = "The dragon is red."
    res = chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}",
               memory_chunk_chars=300, temperature=0.7)
    data = res.get_json()
    assert res.status_code == 200, data
    assert data["choices"][0]["message"]["content"] == "The dragon is red."
    note_calls = [r for r in fake.history if is_note_call(r)]
    chunks = chunk_text(DOC, 300, 32)
    assert len(chunks) >= 3 and len(note_calls) == len(chunks)
    assert len(fake.history) == len(chunks) + 1
    assert all(r.params["temperature"] == 0 for r in note_calls)
    assert all(QUESTION in r.messages[-1].content for r in note_calls)
    final = fake.history[-1]
    assert final.params["temperature"] == 0.7  # the client's, on the answer
    assert f"Question: {QUESTION}" in final.messages[-1].content
    assert "chunk note Paragraph 0" in final.messages[-1].content
    assert "NONE" not in final.messages[-1].content
    meta = data["choices"][0]["optillm_memory"]
    assert meta["chunks"] == len(chunks) and meta["notes"] == len(chunks)
    prompt = sum(sum(len(m.text.split()) or 1 for m in r.messages) for r in fake.history)
    assert data["usage"]["prompt_tokens"] == prompt


def test_note_calls_run_concurrently(make_app, fake):
    fake.delay = 0.1
    client = make_app().test_client()
    chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}", memory_chunk_chars=300)
    assert fake.max_active >= 3


def test_keeps_system_prompt_and_earlier_turns(client, fake):
    client.post("/v1/chat/completions", json={"model": "memory-fake", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": f"{DOC}\n{QUESTION}"}]})
    for r in fake.history:
        assert [m.content for m in r.messages[:3]] == ["Be brief.", "hi", "hello"]


def test_best_notes_are_retrieved_by_bm25():
    notes = ["the sky is blue", "the dragon is red and large", "bread costs two coins",
             "rivers flow downhill", "a red dragon sleeps in the cave"]
    assert rank(notes, "what colour is the dragon", 2) == [1, 4]
    assert rank(notes, "zzz", 2) == [0, 1]  # nothing shared: the first k
    assert rank(notes[:2], "x", 5) == [0, 1]


def test_many_notes_only_top_k_reach_the_answer(client, fake):
    fake.when(is_note_call, "- apples are green\n- the dragon is red\n- bread is cheap")
    chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}", memory_chunk_chars=300,
         memory_top_k=2)
    final = fake.history[-1].messages[-1].content
    assert final.count("- the dragon is red") == 2 and "apples" not in final


def test_malformed_note_replies_never_crash(client, fake):
    fake.when(is_note_call, "NONE")
    fake.default = "dunno"
    res = chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}", memory_chunk_chars=300)
    assert res.status_code == 200
    assert "(no relevant notes)" in fake.history[-1].messages[-1].content
    assert parse_notes("") == [] and parse_notes("1. x\n* y\n\n  Notes:") == ["x", "y"]


def test_without_context_answers_directly(client, fake):
    fake.default = "4"
    data = chat(client, model="memory-fake", content="What is 2+2?").get_json()
    assert data["choices"][0]["message"]["content"] == "4" and len(fake.history) == 1
    assert split_query("a\nb\n\n") == ("a", "b")


@pytest.mark.parametrize("body", [{"memory_persist_path": "../escape.json"},
                                  {"memory_persist_path": "/etc/x.json"}])
def test_bad_options_are_400(client, fake, body):
    res = chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}", **body)
    assert res.status_code == 400 and not fake.history


def test_persistence_is_opt_in_and_under_the_data_dir(make_app, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "env"))  # the plugin reads no env
    client = make_app(data_dir=str(tmp_path / "data")).test_client()
    fake.when(is_note_call, "- the dragon is red")
    chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}", memory_chunk_chars=300,
         memory_persist_path="notes/dragons.json")
    stored = json.loads((tmp_path / "data" / "memory" / "notes" / "dragons.json").read_text())
    assert stored["notes"] and set(stored["notes"]) == {"the dragon is red"}
    assert not (tmp_path / "env").exists()
    fake.rules.clear()
    fake.history.clear()
    fake.when(is_note_call, "NONE")
    chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}", memory_chunk_chars=300,
         memory_persist_path="notes/dragons.json")
    assert "the dragon is red" in fake.history[-1].messages[-1].content
    # without the option nothing is read
    fake.history.clear()
    chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}", memory_chunk_chars=300)
    assert "the dragon is red" not in fake.history[-1].messages[-1].content


def test_symlink_escape_from_the_data_dir_is_400(make_app, fake, tmp_path):
    (tmp_path / "data" / "memory").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "data" / "memory" / "link").symlink_to(tmp_path / "outside")
    client = make_app(data_dir=str(tmp_path / "data")).test_client()
    fake.when(is_note_call, "- the dragon is red")
    res = chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}",
               memory_chunk_chars=300, memory_persist_path="link/x.json")
    assert res.status_code == 400 and "memory_persist_path" in res.get_json()["error"]["message"]
    assert list((tmp_path / "outside").iterdir()) == [] and fake.history == []


def test_missing_rank_bm25_is_a_clear_error(make_app, fake, monkeypatch):
    monkeypatch.setitem(sys.modules, "rank_bm25", None)
    client = make_app().test_client()  # the proxy still starts
    fake.when(is_note_call, "- a\n- b\n- c")
    res = chat(client, model="memory-fake", content=f"{DOC}\n{QUESTION}", memory_chunk_chars=300,
               memory_top_k=1)
    err = res.get_json()["error"]
    assert res.status_code == 501 and err["code"] == "missing_extra"
    assert "pip install 'optillm[memory]'" in err["message"] and "rank-bm25" in err["message"]


def test_in_a_chain_after_readurls(client, fake):
    fake.when(is_note_call, "- the dragon is red")
    fake.default = "red"
    data = chat(client, model="readurls&memory-fake", content=f"{DOC}\n{QUESTION}",
                memory_chunk_chars=300).get_json()
    assert data["choices"][0]["message"]["content"] == "red"
    assert "the dragon is red" in fake.history[-1].messages[-1].content
