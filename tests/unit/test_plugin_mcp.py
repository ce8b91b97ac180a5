"""``mcp`` with the real local stdio MCP server ``tests/mcp_server.py`` and a fake upstream
scripted to return ``tool_calls``: tools offered, calls executed, results fed back, malformed
calls, the round bound, broken servers, the client's own tools, options, a chain."""

import json
import sys
from pathlib import Path

import pytest

from optillm.plugins import mcp_plugin
from optillm.types import Choice, Completion, Message, Usage

from ..conftest import chat
from ..fakes import words

SERVER = str(Path(__file__).resolve().parent.parent / "mcp_server.py")


@pytest.fixture
def config(tmp_path):
    """The server's config folder (``--config-dir``) is tmp_path/conf; its mcp_config.json
    runs the test server."""
    path = tmp_path / "conf" / "mcp_config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"mcpServers": {
        "test": {"command": sys.executable, "args": [SERVER]}}}))
    return path


@pytest.fixture
def client(make_app, tmp_path):
    return make_app(config_dir=str(tmp_path / "conf")).test_client()


def tool_calls(*calls, text=None):
    """A completion whose message asks for ``calls`` = (name, arguments-json) pairs."""
    extra = {"tool_calls": [{"id": f"call_{i}", "type": "function",
                             "function": {"name": n, "arguments": a}}
                            for i, (n, a) in enumerate(calls)]}
    return Completion((Choice(0, Message("assistant", text, extra), "tool_calls"),),
                      Usage(10, 5))


def test_tool_call_round_trip(client, fake, config):
    fake.enqueue(tool_calls(("test__add", '{"a": 2, "b": 3}'),
                            ("test__shout", '{"text": "hi"}')), "The sum is 5.")
    r = chat(client, model="mcp-fake", content="What is 2+3?", temperature=0.2)
    assert r.status_code == 200, r.get_json()
    assert len(fake.history) == 2
    first, second = fake.history
    names = {t["function"]["name"] for t in first.params["tools"]}
    assert {"test__add", "test__shout", "test__fail", "test__slow"} <= names
    add = next(t for t in first.params["tools"] if t["function"]["name"] == "test__add")
    assert add["function"]["parameters"]["required"] == ["a", "b"]
    assert first.params["temperature"] == 0.2
    roles = [m.role for m in second.messages]
    assert roles == ["user", "assistant", "tool", "tool"]
    assert second.messages[2].text == "5" and second.messages[2].extra["tool_call_id"] == "call_0"
    assert second.messages[3].text == "HI"
    choice = r.get_json()["choices"][0]
    assert choice["message"]["content"] == "The sum is 5."
    meta = choice["optillm_mcp"]
    assert meta["servers"] == ["test"] and meta["rounds"] == 1
    assert [c["result"] for c in meta["calls"]] == ["5", "HI"]
    assert r.get_json()["usage"]["prompt_tokens"] == 10 + sum(
        words(m.text) for m in second.messages)


def test_malformed_unknown_and_failing_calls_are_reported_to_the_model(client, fake, config):
    fake.enqueue(tool_calls(("test__add", "{not json"), ("nosuch", "{}"),
                            ("test__fail", '{"reason": "boom"}')), "sorry")
    r = chat(client, model="mcp-fake")
    assert r.status_code == 200, r.get_json()
    tool_msgs = [m.text for m in fake.history[1].messages if m.role == "tool"]
    assert "not a valid JSON object" in tool_msgs[0]
    assert "unknown tool 'nosuch'" in tool_msgs[1] and "test__add" in tool_msgs[1]
    assert "boom" in tool_msgs[2]
    calls = r.get_json()["choices"][0]["optillm_mcp"]["calls"]
    assert [c["is_error"] for c in calls] == [True, True, True]


def test_rounds_are_bounded_and_last_call_has_no_tools(client, fake, config):
    fake.when(lambda r: "tools" in r.params, tool_calls(("test__add", '{"a": 1, "b": 1}')))
    fake.when(lambda r: "tools" not in r.params, "final")
    r = chat(client, model="mcp-fake", mcp_max_rounds=2)
    assert r.status_code == 200, r.get_json()
    assert len(fake.history) == 3 and "tools" not in fake.history[-1].params
    assert r.get_json()["choices"][0]["optillm_mcp"]["rounds"] == 2
    assert r.get_json()["choices"][0]["message"]["content"] == "final"


def test_broken_server_is_skipped_and_clients_tools_go_back(client, fake, config):
    config.write_text(json.dumps({"mcpServers": {"broken": {"command": "/nonexistent/bin"}}}))
    own = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    fake.enqueue(tool_calls(("get_weather", '{"city": "Paris"}')))
    r = chat(client, model="mcp-fake", tools=[own])
    assert r.status_code == 200, r.get_json()
    choice = r.get_json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert "broken" in choice["optillm_mcp"]["errors"]
    assert fake.history[0].params["tools"] == [own]


def test_config_errors_and_options(client, tmp_path):
    r = chat(client, model="mcp-fake")  # tmp_path/conf has no mcp_config.json
    err = r.get_json()["error"]
    assert r.status_code == 400 and err["code"] == "mcp_not_configured"
    assert "no MCP config" in err["message"] and str(tmp_path) not in err["message"]
    bad = tmp_path / "conf" / "mcp_config.json"
    bad.parent.mkdir()
    bad.write_text('{"mcpServers": {"x": {"args": []}}}')
    assert chat(client, model="mcp-fake").status_code == 400
    bad.write_text("nope")
    assert chat(client, model="mcp-fake").status_code == 400
    assert mcp_plugin.config_file("/etc/optillm") == "/etc/optillm/mcp_config.json"


def test_the_request_cannot_choose_the_config(client, fake, config, tmp_path):
    """``mcp_config`` is no option any more: a body naming another file (which would launch
    its own command) changes nothing; the server's config is used."""
    evil = tmp_path / "evil.json"
    marker = tmp_path / "ran"
    evil.write_text(json.dumps({"mcpServers": {"evil": {
        "command": sys.executable, "args": ["-c", f"open({str(marker)!r}, 'w')"]}}}))
    fake.enqueue("done")
    r = chat(client, model="mcp-fake", mcp_config=str(evil),
             optillm={"mcp_config": str(evil)})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["choices"][0]["optillm_mcp"]["servers"] == ["test"]
    assert not marker.exists()


def test_helpers_tolerate_garbage():
    assert mcp_plugin.parse_arguments('["a"]') is None
    assert mcp_plugin.parse_arguments("") == {} and mcp_plugin.parse_arguments({"a": 1}) == {"a": 1}
    assert mcp_plugin.tool_name("my server", "x.y") == "my_server__x_y"
    assert len(mcp_plugin.tool_name("s" * 50, "t" * 50)) == 64


def test_missing_sdk_is_a_clear_error(make_app, fake, config, monkeypatch):
    monkeypatch.setitem(sys.modules, "mcp", None)
    client = make_app(config_dir=str(config.parent)).test_client()  # the proxy still starts
    r = chat(client, model="mcp-fake")
    assert r.status_code == 501 and r.get_json()["error"]["code"] == "missing_extra"
    assert "pip install 'optillm[mcp]'" in r.get_json()["error"]["message"]


def test_in_a_chain(client, fake, config):
    fake.enqueue("What is 4+4?", tool_calls(("test__add", '{"a": 4, "b": 4}')), "8")
    r = chat(client, model="re2&mcp-fake")
    assert r.status_code == 200, r.get_json()
    assert fake.history[1].messages[-1].text == "What is 4+4?"
    assert [m.text for m in fake.history[2].messages if m.role == "tool"] == ["8"]
    assert r.get_json()["choices"][0]["message"]["content"] == "8"
