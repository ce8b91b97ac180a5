"""Command-line agents as models (``cli/<name>``, ``composite/composer-cli/<name>``), run
for real: tests/agents/toy_agent.py is the agent, the gateway config names it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from optillm.upstream.config import ConfigError, parse_config

from ..conftest import chat

AGENT = str(Path(__file__).resolve().parent.parent / "agents" / "toy_agent.py")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a killed process nobody reaped yet is a zombie: dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def agent(mode: str, **extra) -> dict:
    return {"command": [sys.executable, AGENT, "--mode", mode], **extra}


@pytest.fixture
def cli_app(make_app, tmp_path):
    """``cli_app(**agents_or_config)`` -> a test client whose config has those cli_agents
    (and ``profiles`` when given)."""
    def build(profiles=None, **agents):
        config = {"cli_agents": agents}
        if profiles:
            config["profiles"] = profiles
        path = tmp_path / "optillm.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return make_app(config=str(path)).test_client()
    return build


def test_plain_request_answers_with_what_the_agent_prints(cli_app, fake):
    client = cli_app(echo=agent("echo"))
    resp = chat(client, model="cli/echo", content="hello agent")
    assert resp.status_code == 200, resp.json
    assert resp.json["choices"][0]["message"]["content"] == "agent heard: hello agent"
    assert resp.json["usage"]["completion_tokens"] > 0
    assert fake.history == [] and fake.forwarded == []  # nothing went to the model upstream


def test_composer_cli_name_and_transcript_input(cli_app):
    client = cli_app(echo=agent("echo"))
    resp = client.post("/v1/chat/completions", json={
        "model": "composite/composer-cli/echo",
        "messages": [{"role": "system", "content": "Be terse."},
                     {"role": "user", "content": "Hi"}]})
    assert resp.status_code == 200, resp.json
    assert resp.json["choices"][0]["message"]["content"] == \
        "agent heard: System: Be terse.\n\nUser: Hi"


def test_streams_line_by_line(cli_app):
    client = cli_app(lines=agent("lines"))
    resp = chat(client, model="cli/lines", stream=True)
    arrivals = []
    pieces = []
    start = time.monotonic()
    for raw in resp.response:
        for line in raw.decode().split("\n"):
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"]
                if delta and delta[0]["delta"].get("content"):
                    pieces.append(delta[0]["delta"]["content"])
                    arrivals.append(time.monotonic() - start)
    assert "".join(pieces) == "line 1\nline 2\nline 3"
    assert len(pieces) == 3
    assert arrivals[-1] - arrivals[0] >= 0.3  # each line went out as the agent printed it


def test_json_and_argument_input(cli_app):
    client = cli_app(js=agent("json", input="json"),
                     arg={"command": [sys.executable, AGENT, "--mode", "arg", "Q={query}"],
                          "input": "arg"})
    resp = client.post("/v1/chat/completions", json={
        "model": "cli/js", "messages": [{"role": "user", "content": "a"},
                                        {"role": "assistant", "content": "b"},
                                        {"role": "user", "content": "c"}]})
    assert resp.json["choices"][0]["message"]["content"] == "3 messages, last from user"
    resp = chat(client, model="cli/arg", content="what now")
    assert resp.json["choices"][0]["message"]["content"] == "Q=what now"


def test_arg_input_needs_a_placeholder():
    with pytest.raises(ConfigError, match="needs a {prompt} or {query}"):
        parse_config(json.dumps({"cli_agents": {"a": {"command": ["x"], "input": "arg"}}}))


def test_unknown_agent_is_a_404(cli_app):
    resp = chat(cli_app(echo=agent("echo")), model="cli/nosuch")
    assert resp.status_code == 404
    assert "cli/echo" in resp.json["error"]["message"]


def test_timeout_kills_the_process_group(cli_app):
    client = cli_app(slow=agent("sleep", timeout=1.0))
    started = time.monotonic()
    resp = chat(client, model="cli/slow", stream=True)
    text = resp.get_data(as_text=True)
    assert time.monotonic() - started < 10
    grandchild = int(json.loads(text.split("data: ")[2])["choices"][0]["delta"]["content"])
    assert "did not finish within 1 s" in text and "cli_timeout" in text
    time.sleep(0.2)
    assert not alive(grandchild)  # the agent's own child was killed too
    resp = chat(client, model="cli/slow")
    assert resp.status_code == 504 and "did not finish" in resp.json["error"]["message"]


def test_nonzero_exit_is_a_502_with_the_stderr_tail(cli_app):
    resp = chat(cli_app(bad=agent("fail")), model="cli/bad")
    assert resp.status_code == 502
    message = resp.json["error"]["message"]
    assert "exited with status 3" in message and "something went wrong" in message


def test_oversized_output_is_a_502(cli_app):
    resp = chat(cli_app(big=agent("flood", max_output_bytes=100_000)), model="cli/big")
    assert resp.status_code == 502
    assert "more than 100000 bytes" in resp.json["error"]["message"]


def test_working_folder_and_environment(cli_app, tmp_path):
    client = cli_app(temp=agent("pwd", env={"AGENT_FLAG": "on"}),
                     fixed=agent("pwd", workdir=str(tmp_path)))
    out = chat(client, model="cli/temp").json["choices"][0]["message"]["content"]
    folder, env = out.split("\n")
    assert Path(folder).name.startswith("optillm-cli-") and not Path(folder).exists()
    assert env == "True on False"  # PATH set, configured variable set, no server secrets
    out = chat(client, model="cli/fixed").json["choices"][0]["message"]["content"]
    assert out.split("\n")[0] == str(tmp_path)


def test_agent_as_a_council_member(cli_app, fake):
    fake.when_contains("You are the chairman", "Chairman: the answer is 4")
    fake.when_contains("FINAL RANKING", "Fine.\nFINAL RANKING:\n1. Response B\n2. Response A")
    fake.enqueue("The model's opinion: 4")
    client = cli_app(member=agent("council"))
    resp = chat(client, model="council-fake-model", content="2+2?",
                council_models=["cli/member", "fake-model"])
    assert resp.status_code == 200, resp.json
    meta = resp.json["choices"][0]["council_metadata"]
    members = {m["model"]: m for m in meta["members"]}
    assert members["cli/member"]["answer"] == "The agent's opinion: 4"
    assert members["cli/member"]["ranking"] is not None
    assert resp.json["choices"][0]["message"]["content"] == "Chairman: the answer is 4"


def test_agent_in_a_profile(cli_app, fake):
    fake.when_contains("FINAL RANKING", "FINAL RANKING:\n1. Response A\n2. Response B")
    fake.default = "synthesis"
    client = cli_app(profiles={"mixed": {"strategy": "council",
                                         "members": ["cli/member", "fake-model"],
                                         "chairman": "fake-model"}},
                     member=agent("council"))
    resp = chat(client, model="profile/mixed")
    assert resp.status_code == 200, resp.json
    models = [m["model"] for m in resp.json["choices"][0]["council_metadata"]["members"]]
    assert models == ["cli/member", "fake-model"]


def test_n_choices_run_the_agent_once_each(cli_app):
    resp = chat(cli_app(echo=agent("echo")), model="cli/echo", content="x", n=2)
    assert resp.status_code == 200, resp.json
    assert [c["message"]["content"] for c in resp.json["choices"]] == ["agent heard: x"] * 2


def test_agent_behind_the_anthropic_face(cli_app):
    client = cli_app(lines=agent("lines"))
    body = {"model": "composite/composer-cli/lines", "max_tokens": 50,
            "messages": [{"role": "user", "content": "go"}]}
    resp = client.post("/v1/messages", json=body)
    assert resp.status_code == 200, resp.json
    assert resp.json["content"] == [{"type": "text", "text": "line 1\nline 2\nline 3"}]
    text = client.post("/v1/messages", json={**body, "stream": True}).get_data(as_text=True)
    deltas = [json.loads(line[6:])["delta"]["text"] for line in text.split("\n")
              if line.startswith("data: ") and '"text_delta"' in line]
    assert deltas == ["line 1", "\nline 2", "\nline 3"]
    assert "event: message_stop" in text
