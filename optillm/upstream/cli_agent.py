"""Command-line agents as models: ``cli/<name>`` runs the gateway config's ``cli_agents.<name>``.

After Composite LLM's "Composer CLI" model. ``CliAgentUpstream`` implements the ``Upstream``
interface over local commands; ``CliAgentRouter`` (composed in ``create_app`` under the
conversation log) sends every call whose model is ``cli/<name>`` to it and everything else
down the stack, so an agent can be the model of a plain request, one member of a council
(``council_models: [cli/coder, gpt-4o-mini]``), a profile's member or an approach's base model.

One call = one run of the command:

- **input**: ``stdin`` (default) writes the conversation as text: a lone user message as it
  is, else a transcript of ``System:`` / ``User:`` / ``Assistant:`` / ``Tool:`` paragraphs;
  ``json`` writes ``{"model", "messages": [...]}``; ``arg`` replaces ``{prompt}`` (that text)
  and ``{query}`` (the last user message) in the command's arguments, stdin empty.
- **output**: what the command prints on stdout (UTF-8), without its last newline, is choice
  0's answer; a streamed call sends it line by line as the lines arrive.
- **isolation**: no shell (argv as configured), its own session and process group
  (``start_new_session``; the whole group is killed on timeout, on oversized output and when
  the client goes away), the working folder ``workdir`` or else a new temporary folder
  removed afterwards, an environment of PATH, HOME, LANG and the configured ``env`` only.
- **errors**: past ``timeout`` seconds, 504 (``UpstreamTimeoutError``); a non-zero exit, 502
  with the exit status and the last 2000 bytes of stderr; more than ``max_output_bytes`` on
  stdout, 502; a command that cannot be started, 502; an unknown name, 404 naming the agents.
- **usage**: a command reports no tokens, so usage is an estimate (four characters a token
  of the input and of the output), so that budgets and usage sums still see the call.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import NotFoundError, UpstreamError, UpstreamTimeoutError
from ..types import ChatRequest, Choice, Chunk, Completion, Message, Usage, new_id
from .base import NO_META, CallMeta, RawResponse, Upstream, UpstreamWrapper
from .config import CliAgent
from .typed_forward import forward_typed

PREFIX = "cli/"
STDERR_TAIL = 2000
_ROLE_NAMES = {"system": "System", "developer": "System", "user": "User",
               "assistant": "Assistant", "tool": "Tool", "function": "Tool"}


def render(messages: Sequence[Message]) -> str:
    """The conversation as an agent's text input (see the module docstring)."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].text
    return "\n\n".join(f"{_ROLE_NAMES.get(m.role, m.role)}: {m.text}" for m in messages)


def _estimate(text: str) -> int:
    return (len(text) + 3) // 4


class _Run:
    """One running command: stdout lines as they come, then its exit checked."""

    def __init__(self, agent: CliAgent, request: ChatRequest):
        self.agent = agent
        prompt = render(request.messages)
        self.prompt_chars = len(prompt)
        stdin_data: bytes | None = prompt.encode()
        argv = list(agent.command)
        if agent.input == "json":
            stdin_data = json.dumps({"model": request.model,
                                     "messages": [m.to_dict() for m in request.messages]},
                                    ensure_ascii=False).encode()
        elif agent.input == "arg":
            query = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
            argv = [a.replace("{prompt}", prompt).replace("{query}", query) for a in argv]
            stdin_data = None
        self.tempdir = None if agent.workdir else tempfile.mkdtemp(prefix="optillm-cli-")
        self.timed_out = False
        self.stderr = bytearray()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=agent.workdir or self.tempdir, env=dict(agent.env),
                start_new_session=True)
        except OSError as exc:
            self._cleanup()
            raise UpstreamError(f"CLI agent {agent.name!r} could not be started "
                                f"({argv[0]}): {exc.strerror or exc}") from None
        self.timer = threading.Timer(agent.timeout, self._expire)
        self.timer.daemon = True
        self.timer.start()
        self._threads = [threading.Thread(target=self._read_stderr, daemon=True)]
        if stdin_data is not None:
            self._threads.append(threading.Thread(target=self._write, args=(stdin_data,),
                                                  daemon=True))
        for t in self._threads:
            t.start()

    def _write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
        except OSError:
            pass  # the agent does not read all of it (or exited): not our failure
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _read_stderr(self) -> None:
        for piece in iter(lambda: self.proc.stderr.read(4096), b""):
            self.stderr += piece
            if len(self.stderr) > 2 * STDERR_TAIL:
                del self.stderr[:-STDERR_TAIL]

    def _expire(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def lines(self) -> Iterator[str]:
        """stdout's lines as they arrive (newlines kept), then the exit is checked.

        Raises: UpstreamTimeoutError, UpstreamError (see the module docstring)."""
        limit = self.agent.max_output_bytes
        total = 0
        name = self.agent.name
        try:
            while True:
                line = self.proc.stdout.readline(limit - total + 1)
                if not line:
                    break
                total += len(line)
                if total > limit:
                    self.kill()
                    raise UpstreamError(f"CLI agent {name!r} printed more than {limit} bytes "
                                        f"(max_output_bytes)", code="cli_output_too_large")
                yield line.decode("utf-8", "replace")
            status = self.proc.wait()
            if self.timed_out:
                raise UpstreamTimeoutError(f"CLI agent {name!r} did not finish within "
                                           f"{self.agent.timeout:g} s (its process group was "
                                           f"killed)", code="cli_timeout")
            if status != 0:
                for t in self._threads:
                    t.join(1.0)
                tail = bytes(self.stderr[-STDERR_TAIL:]).decode("utf-8", "replace").strip()
                raise UpstreamError(f"CLI agent {name!r} exited with status {status}"
                                    + (f"; stderr: {tail}" if tail else " (no stderr)"),
                                    code="cli_failed")
        finally:
            self.close()

    def close(self) -> None:
        self.timer.cancel()
        self.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
            pass
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        if self.tempdir:
            shutil.rmtree(self.tempdir, ignore_errors=True)
            self.tempdir = None


def _pieces(lines: Iterator[str]) -> Iterator[str]:
    """Lines as answer pieces with the last newline held back (the answer is stdout without
    its final newline, streamed or not)."""
    held = ""
    for line in lines:
        body = line[:-1] if line.endswith("\n") else line
        yield held + body
        held = "\n" if line.endswith("\n") else ""


class CliAgentUpstream(Upstream):
    """The ``Upstream`` over ``agents`` (name -> ``CliAgent``); models are ``cli/<name>``.

    Serves one choice per call (wrap it in ``ChoicesUpstream`` for ``n``)."""

    def __init__(self, agents: Mapping[str, CliAgent]):
        self.agents = dict(agents)

    def agent(self, model: str) -> CliAgent:
        """Raises: NotFoundError naming the configured agents."""
        name = model[len(PREFIX):] if model.startswith(PREFIX) else model
        agent = self.agents.get(name)
        if agent is None:
            known = ", ".join(PREFIX + n for n in sorted(self.agents)) or "none configured"
            raise NotFoundError(f"unknown CLI agent {model!r} (the 'cli_agents' section of "
                                f"--config; known: {known})", param="model",
                                code="cli_agent_not_found")
        return agent

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        run = _Run(self.agent(request.model), request)
        text = "".join(_pieces(run.lines()))
        usage = Usage((run.prompt_chars + 3) // 4, _estimate(text))
        return Completion((Choice(0, Message("assistant", text), "stop"),), usage,
                          model=request.model)

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        run = _Run(self.agent(request.model), request)  # start errors raise at once
        return self._chunks(run, request.model)

    @staticmethod
    def _chunks(run: _Run, model: str) -> Iterator[Chunk]:
        cid, created = new_id(), int(time.time())
        sent = 0
        try:
            yield Chunk(({"index": 0, "delta": {"role": "assistant", "content": ""},
                          "finish_reason": None},), None, model, cid, created)
            for piece in _pieces(run.lines()):
                sent += len(piece)
                if piece:
                    yield Chunk(({"index": 0, "delta": {"content": piece},
                                  "finish_reason": None},), None, model, cid, created)
            yield Chunk(({"index": 0, "delta": {}, "finish_reason": "stop"},), None, model,
                        cid, created)
            yield Chunk((), Usage((run.prompt_chars + 3) // 4, (sent + 3) // 4),
                        model, cid, created)
        finally:
            run.close()  # a consumer that stops early kills the agent

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        """The passthrough: chat completion JSON or SSE bytes (``typed_forward``)."""
        return forward_typed(self, body, meta, stream)

    def models(self, meta: CallMeta = NO_META) -> list[dict[str, Any]]:
        return [{"id": PREFIX + name, "object": "model", "created": 0,
                 "owned_by": "optillm-cli"} for name in sorted(self.agents)]


class CliAgentRouter(UpstreamWrapper):
    """Calls on ``cli/<name>`` go to ``agents``, every other call to ``inner``."""

    def __init__(self, inner: Upstream, agents: Upstream):
        super().__init__(inner)
        self.agents = agents

    def _for(self, model: str | None) -> Upstream:
        return self.agents if model and model.startswith(PREFIX) else self.inner

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        return self._for(request.model).complete(request, meta)

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        return self._for(request.model).stream(request, meta)

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        return self._for(model).forward(body, meta, stream, model)

    def complete_text(self, prompt: str, model: str, params: Mapping[str, Any],
                      meta: CallMeta = NO_META) -> Completion:
        return self._for(model).complete_text(prompt, model, params, meta)

    def apply_template(self, messages: Sequence[Message], model: str,
                       meta: CallMeta = NO_META) -> str:
        return self._for(model).apply_template(messages, model, meta)

    def count_tokens(self, text: str, model: str, meta: CallMeta = NO_META) -> int:
        return self._for(model).count_tokens(text, model, meta)

    def models(self, meta: CallMeta = NO_META) -> list[dict[str, Any]]:
        return self.inner.models(meta) + self.agents.models(meta)

    def close(self) -> None:
        try:
            self.agents.close()
        finally:
            self.inner.close()
