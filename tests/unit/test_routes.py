"""HTTP behaviour over a fake upstream: passthrough, auth, limits, errors, models, health."""

import json

import pytest

from optillm import __version__
from optillm.errors import UpstreamError, UpstreamTimeoutError
from optillm.upstream.base import RawResponse

from ..conftest import chat


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.get_json() == {"status": "healthy",
                                                     "version": __version__}


def test_passthrough_forwards_the_clients_bytes_unchanged(client, fake):
    raw = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], ' \
          b'"top_k": 3, "seed": 1}'
    r = client.post("/v1/chat/completions", data=raw, content_type="application/json")
    assert r.status_code == 200
    assert fake.forwarded == [raw]
    assert r.get_json()["upstream_marker"] is True  # the upstream's bytes came back as they were
    assert fake.history == []  # no typed call: the hot path


def test_passthrough_rewrites_model_and_strips_proxy_fields(client, fake):
    r = chat(client, model="none-fake-model", optillm={"x": 1}, best_of_n=4, top_k=2)
    assert r.status_code == 200
    sent = json.loads(fake.forwarded[0])
    assert sent["model"] == "fake-model" and sent["top_k"] == 2
    assert "optillm" not in sent
    # another approach's option is an ordinary field here: only the plan's are consumed
    assert sent["best_of_n"] == 4


def test_passthrough_stream_relays_sse(client, fake):
    fake.default = "hello there"
    r = chat(client, stream=True)
    body = r.get_data()
    assert r.content_type.startswith("text/event-stream")
    assert body.endswith(b"data: [DONE]\n\n") and b"hello" in body


def test_n_above_one_uses_typed_path_with_all_choices(client, fake, openapi):
    fake.default = ["a b", "c d e", "f"]
    r = chat(client, n=3)
    data = r.get_json()
    assert [c["message"]["content"] for c in data["choices"]] == ["a b", "c d e", "f"]
    assert data["usage"]["completion_tokens"] == 6
    openapi(data, "CreateChatCompletionResponse")


@pytest.mark.parametrize("kw, status, code", [
    ({"n": 0}, 400, "integer_out_of_range"),
    ({"model": "bon&nope-fake"}, 404, "approach_not_found"),
])
def test_request_errors(client, kw, status, code, openapi):
    r = chat(client, **kw)
    assert r.status_code == status
    assert r.get_json()["error"]["code"] == code
    openapi(r.get_json(), "ErrorResponse")


def test_malformed_json_is_400_json(client, openapi):
    r = client.post("/v1/chat/completions", data=b"{oops", content_type="application/json")
    assert r.status_code == 400 and r.content_type == "application/json"
    openapi(r.get_json(), "ErrorResponse")


def test_body_over_limit_is_413(make_app, openapi):
    client = make_app(max_body_bytes=1000).test_client()
    r = chat(client, content="x" * 5000)
    assert r.status_code == 413 and "1000" in r.get_json()["error"]["message"]
    openapi(r.get_json(), "ErrorResponse")


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").get_json()["error"]["code"] == "unknown_url"
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.get_json()["error"]["type"]


def test_proxy_key_guards_and_is_never_forwarded(make_app, fake):
    client = make_app(optillm_api_key="proxy-secret").test_client()
    assert chat(client).status_code == 401
    r = client.post("/v1/chat/completions", headers={"Authorization": "Bearer wrong"},
                    json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "invalid_api_key"
    r = client.post("/v1/chat/completions", headers={"Authorization": "Bearer proxy-secret"},
                    json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    assert all(m.api_key is None for m in fake.metas)  # the proxy key stays in the proxy
    assert client.get("/health").status_code == 200


def test_client_key_forwarded_when_proxy_has_none(make_app, fake):
    client = make_app().test_client()
    client.post("/v1/chat/completions", headers={"Authorization": "Bearer sk-client"},
                json={"model": "bon-m", "messages": [{"role": "user", "content": "x"}]})
    assert fake.metas and all(m.api_key == "sk-client" for m in fake.metas)


def test_upstream_key_wins_over_client_key(make_app, fake):
    client = make_app(openai_api_key="sk-server").test_client()
    client.post("/v1/chat/completions", headers={"Authorization": "Bearer sk-client"},
                json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert fake.metas[0].api_key is None  # the upstream client uses its own key


@pytest.mark.parametrize("exc, status", [(UpstreamError("upstream: kaput"), 502),
                                         (UpstreamTimeoutError("upstream timed out"), 504)])
def test_upstream_failures_map_to_502_504_with_message(client, fake, exc, status):
    fake.default = exc
    r = chat(client, model="re2-fake")
    assert r.status_code == status
    assert exc.message in r.get_json()["error"]["message"]


def test_passthrough_upstream_5xx_becomes_502_with_its_message(client, fake, monkeypatch):
    def forward(body, meta=None, stream=False, model=None):
        data = b'{"error": {"message": "model overloaded", "type": "server_error"}}'
        return RawResponse(500, "application/json", iter((data,)))
    monkeypatch.setattr(fake, "forward", forward)
    r = chat(client)
    assert r.status_code == 502 and "model overloaded" in r.get_json()["error"]["message"]


def test_passthrough_upstream_4xx_keeps_status(client, fake, monkeypatch):
    def forward(body, meta=None, stream=False, model=None):
        return RawResponse(400, "application/json",
                           iter((b'{"error": {"message": "bad tools"}}',)))
    monkeypatch.setattr(fake, "forward", forward)
    r = chat(client)
    assert r.status_code == 400 and "bad tools" in r.get_json()["error"]["message"]


def test_models_lists_upstream_models_and_approaches(client, openapi):
    data = client.get("/v1/models").get_json()
    ids = [m["id"] for m in data["data"]]
    assert "fake-model" in ids
    assert {"none", "re2", "cot_reflection", "bon", "moa", "self_consistency"} <= set(ids)
    openapi(data, "ListModelsResponse")


def test_unexpected_exception_is_500_json_not_a_trace(client, fake):
    fake.default = RuntimeError("surprise")
    r = chat(client, model="re2-fake")
    assert r.status_code == 500 and r.content_type == "application/json"
    assert "Traceback" not in r.get_data(as_text=True)


def test_conform_completion_adds_missing_required_fields_only(openapi):
    from optillm.web.chat import conform_completion

    bare = (b'{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
            b'"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}]}')
    fixed = json.loads(conform_completion(bare))
    assert fixed["choices"][0]["logprobs"] is None
    assert fixed["choices"][0]["message"]["refusal"] is None
    openapi(fixed, "CreateChatCompletionResponse")
    conforming = json.dumps(fixed).encode()
    assert conform_completion(conforming) is conforming  # untouched, not re-serialised


def test_logprobs_object_gets_refusal_key(openapi):
    from optillm.types import Completion

    data = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi"},
                         "logprobs": {"content": [{"token": "hi", "logprob": -0.1,
                                                   "bytes": None, "top_logprobs": []}]}}]}
    out = Completion.from_dict(data).to_dict()
    assert out["choices"][0]["logprobs"]["refusal"] is None
    openapi(out, "CreateChatCompletionResponse")
