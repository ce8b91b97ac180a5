"""The response cache through the real app, over both stores (the embedded on-disk store and a
real Redis): hits for identical deterministic requests, a miss for every field that changes the
answer, the ``cache`` directive, ``DELETE /cache``, stream replay with the original chunking,
approach requests keyed with their options, errors never kept, the client's key as a scope."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from optillm.errors import UpstreamError
from optillm.upstream.base import RawResponse
from optillm.upstream.cache import Entry
from optillm.upstream.store import LazyStore

from ..fakes import FakeUpstream
from ..redis_fixture import redis_url  # noqa: F401 - the fixture

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
BASE = {"model": "fake-model", "messages": QUESTION, "temperature": 0}


@pytest.fixture(params=["disk", "redis"])
def store_settings(request, tmp_path):
    """Settings that put the cache in one store; Redis starts empty for every test."""
    if request.param == "redis":
        import redis

        url = request.getfixturevalue("redis_url")
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        return {"redis_url": url}
    return {"cache_dir": str(tmp_path / "store")}


@pytest.fixture
def cached_app(make_app, store_settings):
    def build(upstream=None, **overrides):
        return make_app(upstream, **{"cache_ttl": 60, **store_settings, **overrides})

    return build


@pytest.fixture
def client(cached_app):
    return cached_app().test_client()


def post(client, body=None, drop=(), headers=None, **fields):
    payload = {k: v for k, v in BASE.items() if k not in drop}
    payload.update({**(body or {}), **fields})
    return client.post("/v1/chat/completions", json=payload, headers=headers)


def state(response) -> str:
    return response.headers.get("X-Optillm-Cache")


def sent(fake: FakeUpstream) -> list[dict]:
    """The bodies the passthrough forwarded upstream."""
    return [json.loads(b) for b in fake.forwarded]


# -- hits and misses ------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [{"temperature": 0}, {"temperature": 0.9, "seed": 7},
                                    {"seed": 0}])
def test_identical_deterministic_requests_hit(client, fake, fields):
    first = post(client, fields, drop=["temperature"])
    second = post(client, fields, drop=["temperature"])
    assert (state(first), state(second)) == ("miss", "hit")
    assert second.status_code == 200
    assert second.data == first.data
    assert len(fake.forwarded) == 1


@pytest.mark.parametrize("fields", [{}, {"temperature": 0.7}, {"temperature": 0.7, "seed": None},
                                    {"seed": "7"}, {"seed": True}])
def test_non_deterministic_requests_are_never_cached(client, fake, fields):
    for _ in range(3):
        r = post(client, fields, drop=["temperature"])
        assert r.status_code == 200 and state(r) == "miss"
    assert len(fake.forwarded) == 3
    assert client.get("/cache").get_json()["writes"] == 0


TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("field, a, b", [
    ("model", "fake-model", "other-model"),
    ("messages", QUESTION, [{"role": "user", "content": "What is 2+3?"}]),
    ("messages", QUESTION, [{"role": "system", "content": "Be terse."}, *QUESTION]),
    ("messages", QUESTION, [{"role": "assistant", "content": "What is 2+2?"}]),
    ("tools", [TOOL], [{**TOOL, "function": {**TOOL["function"], "name": "sub"}}]),
    ("tool_choice", "auto", "none"),
    ("response_format", {"type": "text"}, {"type": "json_object"}),
    ("n", 1, 2),
    ("stop", ["\n"], ["."]),
    ("logprobs", False, True),
    ("top_logprobs", 1, 2),
    ("temperature", 0, 0.5),  # with seed 1 in both, so both are deterministic
    ("top_p", 1.0, 0.5),
    ("frequency_penalty", 0.0, 0.5),
    ("presence_penalty", 0.0, 0.5),
    ("max_tokens", 16, 17),
    ("max_completion_tokens", 16, 17),
    ("logit_bias", {"1": 1}, {"1": 2}),
    ("seed", 1, 2),
    ("top_k", 20, 40),
    ("reasoning_effort", "low", "high"),
])
def test_every_answer_changing_field_is_in_the_key(client, fake, field, a, b):
    common = {"seed": 1}
    r_a = post(client, {**common, field: a})
    r_b = post(client, {**common, field: b})
    assert r_a.status_code == 200 and r_b.status_code == 200, r_b.get_json()
    assert (state(r_a), state(r_b)) == ("miss", "miss")
    again = [post(client, {**common, field: v}) for v in (a, b)]
    assert [state(r) for r in again] == ["hit", "hit"]  # the key is stable, not random
    upstream_calls = len(fake.forwarded) + len(fake.history)
    assert upstream_calls == 2


@pytest.mark.parametrize("field, a, b", [("user", "alice", "bob"),
                                         ("safety_identifier", "x", "y"),
                                         ("prompt_cache_key", "p", "q")])
def test_fields_naming_the_caller_do_not_split_the_cache(client, fake, field, a, b):
    assert state(post(client, {field: a})) == "miss"
    assert state(post(client, {field: b})) == "hit"
    assert len(fake.forwarded) == 1


def test_streamed_and_plain_answers_are_kept_apart(client, fake):
    assert state(post(client)) == "miss"
    r = post(client, stream=True)
    assert state(r) == "miss" and r.data.rstrip().endswith(b"data: [DONE]")
    assert state(post(client, stream=True)) == "hit"
    assert state(post(client, stream=True, stream_options={"include_usage": True})) == "miss"
    assert len(fake.forwarded) == 3


def test_two_apps_on_one_store_share_it(cached_app, fake):
    """What two gunicorn workers do: separate processes' caches over one store."""
    first, second = cached_app().test_client(), cached_app().test_client()
    assert state(post(first)) == "miss"
    r = post(second)
    assert state(r) == "hit" and r.status_code == 200
    assert len(fake.forwarded) == 1


def test_entries_expire_after_the_ttl(cached_app, fake):
    client = cached_app(cache_ttl=0.3).test_client()
    assert state(post(client)) == "miss"
    assert state(post(client)) == "hit"
    time.sleep(0.6)
    assert state(post(client)) == "miss"
    assert len(fake.forwarded) == 2


# -- the directive ---------------------------------------------------------------------------

def test_no_cache_neither_reads_nor_writes_and_is_not_sent_upstream(client, fake):
    r = post(client, cache={"no-cache": True})
    assert state(r) is None or state(r) == "miss"
    assert state(post(client)) == "miss"  # the no-cache answer was not stored
    r = post(client, cache={"no-cache": True})
    assert r.status_code == 200 and state(r) != "hit"  # not read either
    assert len(fake.forwarded) == 3
    assert all("cache" not in body for body in sent(fake))


def test_no_store_reads_but_does_not_write(client, fake):
    assert state(post(client, cache={"no-store": True})) == "miss"
    assert state(post(client)) == "miss"  # nothing was written
    r = post(client, cache={"no-store": True})
    assert state(r) == "hit"  # but a stored answer is read
    assert len(fake.forwarded) == 2


def test_a_bad_directive_is_a_400(client, fake):
    for directive in ("no-cache", {"no-cache": "yes"}):
        r = post(client, cache=directive)
        assert r.status_code == 400 and r.get_json()["error"]["param"] == "cache"
    assert fake.forwarded == []


def test_no_cache_through_the_sdks_extra_body(cached_app, fake):
    import httpx
    import openai

    app = cached_app()
    sdk = openai.OpenAI(base_url="http://proxy.test/v1", api_key="k", max_retries=0,
                        http_client=httpx.Client(transport=httpx.WSGITransport(app=app)))
    create = sdk.chat.completions.with_raw_response.create
    kwargs = {"model": "fake-model", "messages": QUESTION, "temperature": 0}
    assert create(**kwargs).headers["x-optillm-cache"] == "miss"
    assert create(**kwargs).headers["x-optillm-cache"] == "hit"
    bypass = create(**kwargs, extra_body={"cache": {"no-cache": True}})
    assert bypass.headers.get("x-optillm-cache") != "hit"
    assert bypass.parse().choices[0].message.content == "ok"
    assert len(fake.forwarded) == 2


def test_delete_cache_clears_every_entry(client, fake):
    post(client)
    post(client, stream=True).get_data()  # a stream is kept once it was read to the end
    post(client, {"model": "moa-fake-model"})
    stats = client.get("/cache").get_json()
    assert stats["writes"] >= 3 and stats["backend"] in ("disk", "redis")
    r = client.delete("/cache")
    assert r.status_code == 200 and r.get_json()["deleted"] >= 3
    assert state(post(client)) == "miss"
    r = post(client, stream=True)
    assert state(r) == "miss" and r.get_data()
    assert client.delete("/cache").get_json()["deleted"] >= 2


def test_delete_cache_when_the_cache_is_off_is_a_404(make_app):
    r = make_app().test_client().delete("/cache")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "cache_off"


def test_delete_cache_keeps_the_other_data_of_the_store(cached_app, store_settings):
    app = cached_app()
    store: LazyStore = app.extensions["optillm"].store
    store.set("responses:resp_1", b"conversation")
    post(app.test_client())
    assert app.test_client().delete("/cache").get_json()["deleted"] == 1
    assert store.get("responses:resp_1") == b"conversation"


# -- streams -----------------------------------------------------------------------------------

PIECES = (b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"as',
          b'sistant","content":"The"},"finish_reason":null}]}\n\ndata: {"object":"chat.co',
          b'mpletion.chunk","choices":[{"index":0,"delta":{"content":" end"},"finish_reason"',
          b':"stop"}]}\n\n', b"data: [DONE]\n\n")


class RawFake(FakeUpstream):
    """A fake whose passthrough answers with scripted raw responses, in order."""

    def __init__(self, *answers: tuple[int, str, tuple[bytes, ...]]):
        super().__init__()
        self.answers = list(answers)

    def forward(self, body, meta=None, stream=False, model=None) -> RawResponse:
        self.forwarded.append(body)
        status, content_type, pieces = self.answers.pop(0) if len(self.answers) > 1 \
            else self.answers[0]
        return RawResponse(status, content_type, iter(pieces))


def pieces_of(response) -> list[bytes]:
    return [p for p in response.response if p]


def test_a_stream_is_replayed_with_its_original_chunking(cached_app):
    upstream = RawFake((200, "text/event-stream", PIECES))
    client = cached_app(upstream).test_client()
    first = client.post("/v1/chat/completions", json={**BASE, "stream": True}, buffered=False)
    assert state(first) == "miss" and pieces_of(first) == list(PIECES)
    second = client.post("/v1/chat/completions", json={**BASE, "stream": True}, buffered=False)
    assert state(second) == "hit"
    assert second.content_type.startswith("text/event-stream")
    assert pieces_of(second) == list(PIECES)
    assert len(upstream.forwarded) == 1


@pytest.mark.parametrize("answer", [
    (200, "text/event-stream", PIECES[:3]),                      # cut before [DONE]
    (200, "text/event-stream", (b'data: {"error": {"message": "x"}}\n\n', b"data: [DONE]\n\n")),
    (200, "application/json", (b'{"object": "chat.completion"}',)),  # no choices
    (500, "application/json", (b'{"error": {"message": "upstream broke"}}',)),
    (429, "application/json", (b'{"error": {"message": "slow down"}}',)),
    (400, "application/json", (b'{"error": {"message": "bad field"}}',)),
])
def test_incomplete_or_failed_passthrough_answers_are_not_kept(cached_app, answer):
    upstream = RawFake(answer)
    client = cached_app(upstream).test_client()
    stream = answer[1] == "text/event-stream"
    for _ in range(2):
        r = client.post("/v1/chat/completions", json={**BASE, "stream": stream})
        assert state(r) == "miss"
        r.close()
    assert len(upstream.forwarded) == 2
    assert client.get("/cache").get_json()["writes"] == 0


def test_a_stream_the_client_leaves_early_is_not_kept(cached_app):
    upstream = RawFake((200, "text/event-stream", PIECES))
    client = cached_app(upstream).test_client()
    r = client.post("/v1/chat/completions", json={**BASE, "stream": True}, buffered=False)
    it: Iterator[bytes] = iter(r.response)
    next(it)
    r.close()  # the client hung up after one piece
    again = client.post("/v1/chat/completions", json={**BASE, "stream": True})
    assert state(again) == "miss"
    assert len(upstream.forwarded) == 2


# -- approach requests ---------------------------------------------------------------------------

def text_of(response) -> str:
    return response.get_json()["choices"][0]["message"]["content"]


def test_approach_requests_are_cached_keyed_with_their_options(client, fake):
    fake.default = lambda r: f"answer {len(fake.history)}"
    first = post(client, model="moa-fake-model")
    assert state(first) == "miss" and len(fake.history) == 3
    again = post(client, model="moa-fake-model")
    assert state(again) == "hit" and text_of(again) == text_of(first)
    assert len(fake.history) == 3
    calls = len(fake.history)
    for body in ({"moa_candidates": 2}, {"optillm": {"moa_candidates": 2}},
                 {"return_full_response": True}, {"optillm_approach": "re2"}):
        r = post(client, body, model="moa-fake-model")
        assert r.status_code == 200 and state(r) == "miss", body
        assert len(fake.history) > calls, body
        calls = len(fake.history)


def test_the_approach_named_in_the_model_is_part_of_the_key(client, fake):
    assert state(post(client, model="moa-fake-model")) == "miss"
    assert state(post(client, model="re2-fake-model")) == "miss"
    assert state(post(client, model="fake-model")) == "miss"


def test_a_streamed_approach_answer_is_replayed_as_a_stream(client, fake):
    def content(response) -> str:
        text = ""
        for line in response.data.decode().splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content") or ""
        return text

    fake.default = "four is the answer"
    body = {"model": "moa-fake-model", "stream": True,
            "stream_options": {"include_usage": True}}
    first = post(client, body)
    first.get_data()  # kept once the stream ended
    calls = len(fake.history)
    second = post(client, body)
    assert (state(first), state(second)) == ("miss", "hit")
    assert second.content_type.startswith("text/event-stream")
    assert content(second) == content(first) == "four is the answer"
    assert b'"usage"' in second.data and second.data.rstrip().endswith(b"data: [DONE]")
    assert len(fake.history) == calls


def test_approach_errors_are_not_kept(client, fake):
    fake.enqueue(UpstreamError("upstream down"))
    r = post(client, model="re2-fake-model")
    assert r.status_code == 502 and state(r) != "hit"
    ok = post(client, model="re2-fake-model")
    assert ok.status_code == 200 and state(ok) == "miss"
    assert state(post(client, model="re2-fake-model")) == "hit"
    assert len(fake.history) == 2


def test_an_approachs_own_deterministic_calls_are_cached(client, fake):
    """The typed calls under the routes: re2's one call, at the client's temperature 0, is
    stored by the stack's cache layer even when the request itself is not kept."""
    assert post(client, {"cache": {"no-store": True}}, model="re2-fake-model").status_code \
        == 200
    assert len(fake.history) == 1
    # the request was not stored (no-store), and the call under it was not either
    assert state(post(client, model="re2-fake-model")) == "miss"
    assert len(fake.history) == 2
    # different approach-level key (full response), same upstream call: the call is a hit
    r = post(client, {"return_full_response": True}, model="re2-fake-model")
    assert state(r) == "miss" and len(fake.history) == 2


# -- scoping -------------------------------------------------------------------------------------

def test_the_clients_own_key_scopes_its_entries(client, fake):
    """Without a key of the proxy's own, the client's key goes upstream: one client must not
    read what another's key paid for."""
    def as_(key):
        return post(client, headers={"Authorization": f"Bearer {key}"})

    assert state(as_("key-1")) == "miss"
    assert state(as_("key-2")) == "miss"
    assert state(as_("key-1")) == "hit"
    assert state(as_("key-2")) == "hit"
    assert state(post(client)) == "miss"  # no key at all is a scope of its own
    assert len(fake.forwarded) == 3


def test_with_the_proxys_own_upstream_key_clients_share_entries(cached_app, fake):
    client = cached_app(openai_api_key="sk-proxy").test_client()
    assert state(post(client, headers={"Authorization": "Bearer a"})) == "miss"
    assert state(post(client, headers={"Authorization": "Bearer b"})) == "hit"
    assert len(fake.forwarded) == 1


def test_an_unreachable_store_is_a_miss_never_a_failure(make_app, fake):
    client = make_app(cache_ttl=60, redis_url="redis://127.0.0.1:1/0").test_client()
    for _ in range(2):
        r = post(client)
        assert r.status_code == 200 and state(r) == "miss"
    assert len(fake.forwarded) == 2


# -- the stores themselves ---------------------------------------------------------------------

@pytest.fixture
def store(store_settings):
    s = LazyStore(store_settings.get("redis_url"), store_settings.get("cache_dir", ""))
    yield s
    s.close()


def test_store_get_set_delete_and_clear_by_prefix(store):
    assert store.get("a:1") is None
    store.set("a:1", b"one")
    store.set("a:2", b"\x00two\xff")
    store.set("b:1", b"other")
    assert store.get("a:1") == b"one" and store.get("a:2") == b"\x00two\xff"
    store.delete("a:1")
    assert store.get("a:1") is None
    assert store.clear("a:") == 1
    assert store.get("a:2") is None and store.get("b:1") == b"other"


def test_store_ttl(store):
    store.set("t", b"x", 0.2)
    store.set("forever", b"y")
    assert store.get("t") == b"x"
    time.sleep(0.5)
    assert store.get("t") is None and store.get("forever") == b"y"


def test_entry_round_trips_pieces_exactly():
    entry = Entry("raw", PIECES, "text/event-stream")
    assert Entry.decode(entry.encode()) == entry
    with pytest.raises(ValueError):
        Entry.decode(entry.encode()[:-1])
    with pytest.raises(ValueError):
        Entry.decode(b"not an entry")
