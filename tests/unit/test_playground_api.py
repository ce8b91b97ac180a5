"""The playground's data routes and the traced-requests ring (optillm.web.playground, .traces)."""

from __future__ import annotations

import json

import pytest

from optillm.web import traces

TRACE = {"X-Optillm-Trace": "1"}


@pytest.fixture
def client(make_app, tmp_path):
    """The app with its shared store in this test's folder (traced records go there too)."""
    return make_app(cache_dir=str(tmp_path / "store")).test_client()


def ask(client, request_id, approach="bon", headers=None, **body):
    return client.post("/v1/chat/completions", headers={"X-Request-ID": request_id,
                                                        **(headers or {})},
                       json={"model": "fake", "optillm_approach": approach,
                             "messages": [{"role": "user", "content": "2+2?"}], **body})


def test_traced_request_is_kept_with_logging_off(client, fake):
    fake.default = "four"
    assert ask(client, "pg-1", headers=TRACE).status_code == 200
    record = client.get("/v1/optillm/requests/pg-1").get_json()
    assert record["request_id"] == "pg-1" and record["approach"] == "bon"
    assert len(record["provider_calls"]) == 4  # 1 call for 3 candidates, 3 ratings
    assert record["provider_calls"][0]["response"]["usage"]["prompt_tokens"] > 0
    assert record["final_response"]["choices"][0]["message"]["content"] == "four"
    assert record["error"] is None


def test_untraced_request_is_not_recorded_with_logging_off(make_app, tmp_path):
    app = make_app(cache_dir=str(tmp_path / "store"))
    client = app.test_client()
    assert ask(client, "plain-1").status_code == 200
    response = client.get("/v1/optillm/requests/plain-1")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == \
        "record_not_found"
    assert len(app.extensions["optillm"].conversation_logger.ring) == 0


def test_records_come_from_the_log_files_when_logging_is_on(make_app, tmp_path):
    app = make_app(log_conversations=True, cache_dir=str(tmp_path / "store"))
    client = app.test_client()
    assert ask(client, "logged-1", approach="re2").status_code == 200
    assert ask(client, "logged-2", approach="bon").status_code == 200
    assert len(app.extensions["optillm"].conversation_logger.ring) == 0  # files only
    assert client.get("/v1/optillm/requests/logged-1").get_json()["approach"] == "re2"
    listed = client.get("/v1/optillm/requests?limit=10").get_json()
    assert [r["request_id"] for r in listed["data"]] == ["logged-2", "logged-1"]
    assert listed["sources"]["log_files"] is True


def test_list_filters_by_approach_and_status(client, fake):
    ask(client, "a-1", approach="bon", headers=TRACE)
    ask(client, "a-2", approach="re2", headers=TRACE)
    from optillm.errors import UpstreamError

    fake.enqueue(UpstreamError("upstream down"))
    ask(client, "a-3", approach="re2", headers=TRACE)

    def ids(query):
        return [r["request_id"] for r in client.get("/v1/optillm/requests" + query)
                .get_json()["data"]]

    assert ids("") == ["a-3", "a-2", "a-1"]
    assert ids("?approach=re2") == ["a-3", "a-2"]
    assert ids("?status=error") == ["a-3"]
    assert ids("?approach=re2&status=ok") == ["a-2"]
    assert ids("?limit=1") == ["a-3"]
    for bad in ("?limit=0", "?limit=x", "?status=maybe"):
        assert client.get("/v1/optillm/requests" + bad).status_code == 400, bad


def test_data_routes_need_the_key_pages_do_not(make_app, tmp_path):
    client = make_app(optillm_api_key="sk-p", cache_dir=str(tmp_path / "store")).test_client()
    key = {"Authorization": "Bearer sk-p"}
    assert ask(client, "k-1", headers={**TRACE, **key}).status_code == 200
    assert client.get("/v1/optillm/requests/k-1").status_code == 401
    assert client.get("/v1/optillm/requests/k-1", headers=key).status_code == 200
    page = client.get("/playground")
    assert page.status_code == 200 and b"key-form" in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_records_without_a_key_are_for_loopback_clients_only(make_app, tmp_path):
    remote = {"REMOTE_ADDR": "192.0.2.7"}
    open_app = make_app(cache_dir=str(tmp_path / "store")).test_client()
    ask(open_app, "r-1", headers=TRACE)
    for path in ("/v1/optillm/requests/r-1", "/v1/optillm/requests"):
        response = open_app.get(path, environ_base=remote)
        assert response.status_code == 403, path
        assert response.get_json()["error"]["code"] == "records_need_a_key"
        assert open_app.get(path).status_code == 200, path  # the test client is 127.0.0.1
    keyed = make_app(optillm_api_key="sk-p", cache_dir=str(tmp_path / "store")).test_client()
    key = {"Authorization": "Bearer sk-p"}
    ask(keyed, "r-2", headers={**TRACE, **key})
    assert keyed.get("/v1/optillm/requests/r-2", headers=key, environ_base=remote
                     ).status_code == 200  # with a key, the key decides


def test_approaches_route_lists_options(client):
    body = client.get("/v1/optillm/approaches").get_json()
    by_id = {a["id"]: a for a in body["data"]}
    assert by_id["bon"]["options"]["properties"]["best_of_n"]["maximum"] == 32
    assert by_id["moa"]["description"]
    assert body["conversation_log"] is False


def test_index_redirects_browsers_and_describes_itself_to_others(client):
    browser = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status_code == 302 and browser.headers["Location"].endswith("/playground")
    other = client.get("/", headers={"Accept": "*/*"})
    assert other.status_code == 200 and other.get_json()["playground"] == "/playground"


def test_a_traced_record_is_found_from_another_worker(make_app, tmp_path):
    """Two apps over one shared store stand for two gunicorn workers, logging off."""
    first = make_app(cache_dir=str(tmp_path / "store")).test_client()
    second = make_app(cache_dir=str(tmp_path / "store"))
    assert ask(first, "w-1", headers=TRACE).status_code == 200
    assert len(second.extensions["optillm"].conversation_logger.ring) == 0
    record = second.test_client().get("/v1/optillm/requests/w-1")
    assert record.status_code == 200 and record.get_json()["approach"] == "bon"
    assert second.test_client().get("/v1/optillm/requests/w-2").status_code == 404


def test_a_store_failure_loses_only_the_shared_copy(make_app, tmp_path, monkeypatch):
    app = make_app(cache_dir=str(tmp_path / "store"))
    store = app.extensions["optillm"].store

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "set", broken)
    monkeypatch.setattr(store, "get", broken)
    client = app.test_client()
    assert ask(client, "f-1", headers=TRACE).status_code == 200
    assert client.get("/v1/optillm/requests/f-1").status_code == 200  # from the ring
    assert client.get("/v1/optillm/requests/f-2").status_code == 404


def test_ring_is_bounded_and_newest_first():
    ring = traces.RecentRecords(3)
    for i in range(5):
        ring.add({"request_id": f"r{i}"})
    assert [r["request_id"] for r in ring.latest()] == ["r4", "r3", "r2"]
    assert ring.get("r0") is None and ring.get("r3") == {"request_id": "r3"}


def test_ring_records_are_redacted(client):
    ask(client, "sec-1", headers=TRACE, user="sk-abcdefghijklmnop")
    record = client.get("/v1/optillm/requests/sec-1").get_json()
    assert "sk-abcdefghijklmnop" not in json.dumps(record)


@pytest.mark.parametrize("size", [10, 70_000, 200_000])
def test_read_log_backwards_across_blocks(tmp_path, size):
    lines = [{"request_id": f"q{i}", "pad": "x" * (size if i % 2 else 5)} for i in range(7)]
    (tmp_path / "conversations_2026-01-01.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines[:3]))
    (tmp_path / "conversations_2026-01-02.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in lines[3:]) + '{"torn')
    got = [r["request_id"] for r in traces.read_log(str(tmp_path))]
    assert got == [f"q{i}" for i in reversed(range(7))]
    found = list(traces.read_log(str(tmp_path), needle=b'"q1"'))
    assert [r["request_id"] for r in found] == ["q1"]
    assert len(list(traces.read_log(str(tmp_path), max_bytes=1))) < 7  # the scan is bounded
