"""``mcp``: tools from Model Context Protocol servers, called when the model asks for them.

The servers come from a JSON config shaped like Claude Desktop's::

    {"mcpServers": {"files": {"command": "python", "args": ["server.py"], "env": {...},
                              "cwd": "/srv"},
                    "remote": {"url": "http://127.0.0.1:8000/mcp"}}}

(``command``/``args`` for a stdio server, launched as a subprocess with the SDK's minimal
environment plus ``env``; ``url`` for a streamable-HTTP server). The file is
``<config folder>/mcp_config.json``, the config folder being the server's ``--config-dir``
(``ctx.settings.config_path``); the request cannot name another file, since the config decides
which programs the server runs. For each request the plugin
connects to every server concurrently (a server that fails is skipped and named in the
metadata), lists their tools and offers them to the upstream as OpenAI ``tools`` (named
``<server>__<tool>``, alongside any tools of the client's own). While the model answers with
``tool_calls`` for MCP tools, they run through the MCP sessions (the calls of one round
concurrently) and their results go back as ``tool`` messages; a call with malformed arguments or
an unknown tool gets an error message the model can read. A call of one of the client's own
tools ends the run: the assistant message with its ``tool_calls`` goes to the client. After
``mcp_max_rounds`` rounds with tool calls, one last call without tools makes the answer.

Calls: 1 + (rounds with tool calls), at most ``mcp_max_rounds + 1``; each call needs the tool
results of the one before, so the depth equals the call count. The client's parameters apply
to every call (``tools`` is replaced by the combined list).

Options (request body): ``mcp_max_rounds`` (int 1-20, default 5), ``mcp_timeout`` (seconds
1-300, default 30: connecting and each tool call).

Errors: ``BadRequestError`` (400, code ``mcp_not_configured``) when the server has no config or
it is malformed (the message does not show the server's path); ``MissingExtraError`` (501,
``missing_extra``) when the ``mcp`` SDK is not installed (extra ``mcp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequestError, MissingExtraError
from ..options import opt
from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "mcp"
EXTRA = "mcp"
RESULT_CHARS = 8000
CONFIG_NAME = "mcp_config.json"


@dataclass(frozen=True)
class Options:
    mcp_max_rounds: int = opt(5, ge=1, le=20)
    mcp_timeout: float = opt(30.0, ge=1, le=300, unit="seconds")


def config_file(config_path: str) -> str:
    """The MCP config in the server's config folder: ``<config_path>/mcp_config.json``."""
    return os.path.join(config_path, CONFIG_NAME)


def _not_configured(why: str) -> BadRequestError:
    return BadRequestError(f"plugin {SLUG!r}: {why}", code="mcp_not_configured")


def load_config(path: str) -> dict[str, dict[str, Any]]:
    """The ``mcpServers`` entries of the config at ``path``.

    Raises: BadRequestError when the file is missing, not JSON, or an entry has neither a
    ``command`` nor a ``url``; the client sees the file's name, not the server's folder.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise _not_configured(f"this server has no MCP config ({CONFIG_NAME} in its "
                              f"--config-dir)") from None
    except (OSError, ValueError) as exc:
        raise _not_configured(f"cannot read the server's {CONFIG_NAME}: "
                              f"{type(exc).__name__}") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise _not_configured(f"the server's {CONFIG_NAME} has no 'mcpServers' object")
    for name, entry in servers.items():
        ok = isinstance(entry, dict) and (
            isinstance(entry.get("command"), str) or isinstance(entry.get("url"), str))
        if not ok or not isinstance(entry.get("args", []), list) \
                or not isinstance(entry.get("env", {}), dict):
            raise _not_configured(f"server {name!r} in the server's {CONFIG_NAME} needs a "
                                  f"'command' (with list 'args') or a 'url'")
    return servers


def tool_name(server: str, tool: str) -> str:
    """An OpenAI function name (``^[A-Za-z0-9_-]{1,64}$``) for ``tool`` of ``server``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}__{tool}")[:64]


def result_text(result: Any) -> str:
    """The text of an MCP ``CallToolResult`` (text parts joined; others described)."""
    parts = []
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'data')}]")
    text = "\n".join(parts)
    if not text and getattr(result, "structured_content", None) is not None:
        text = json.dumps(result.structured_content)
    return text[:RESULT_CHARS]


def parse_arguments(raw: Any) -> dict[str, Any] | None:
    """A tool call's arguments: a JSON object string (or an object); None when malformed."""
    if isinstance(raw, dict):
        return raw
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Toolbox:
    """The connected MCP sessions of one request and their tools (lives in the run only)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.stack = contextlib.AsyncExitStack()
        self.tools: dict[str, tuple[Any, str]] = {}  # openai name -> (client, mcp tool name)
        self.specs: list[dict[str, Any]] = []
        self.errors: dict[str, str] = {}
        self.connected: list[str] = []

    async def connect(self, servers: dict[str, dict[str, Any]]) -> None:
        from mcp import Client, StdioServerParameters

        async def one(name: str, entry: dict[str, Any]) -> None:
            if entry.get("url"):
                target: Any = entry["url"]
            else:
                target = StdioServerParameters(
                    command=entry["command"], args=[str(a) for a in entry.get("args", [])],
                    env={str(k): str(v) for k, v in entry.get("env", {}).items()} or None,
                    cwd=entry.get("cwd"))
            try:
                # asyncio.timeout, not wait_for: the session's task group must be entered
                # (and later left) from this task
                async with asyncio.timeout(self.timeout):
                    client = await self.stack.enter_async_context(
                        Client(target, read_timeout_seconds=self.timeout))
                    listed = await client.list_tools()
            except Exception as exc:  # noqa: BLE001 - a broken server must not end the run
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                return
            self.connected.append(name)
            for tool in listed.tools:
                fname = tool_name(name, tool.name)
                self.tools[fname] = (client, tool.name)
                self.specs.append({"type": "function", "function": {
                    "name": fname, "description": (tool.description or "")[:1000],
                    "parameters": tool.input_schema or {"type": "object", "properties": {}}}})

        # connected one after another: the exit stack must be entered from one task
        for name, entry in servers.items():
            await one(name, entry)

    async def call(self, name: str, raw_arguments: Any) -> tuple[str, bool]:
        """``(text, is_error)`` of calling the OpenAI-named tool ``name``."""
        arguments = parse_arguments(raw_arguments)
        if arguments is None:
            return "error: the arguments are not a valid JSON object", True
        client, tool = self.tools[name]
        try:
            async with asyncio.timeout(self.timeout):
                result = await client.call_tool(tool, arguments)
        except Exception as exc:  # noqa: BLE001 - the model reads the failure
            return f"error: {type(exc).__name__}: {exc}", True
        return result_text(result), bool(getattr(result, "is_error", False))


def run(ctx: RunContext) -> Answer:
    opts: Options = ctx.options
    servers = load_config(config_file(ctx.settings.config_path))
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise MissingExtraError.for_extra(SLUG, EXTRA, "mcp") from None
    return asyncio.run(_run(ctx, opts, servers))


async def _run(ctx: RunContext, opts: Options, servers: dict[str, dict[str, Any]]) -> Answer:
    box = Toolbox(opts.mcp_timeout)
    async with box.stack:
        await box.connect(servers)
        client_tools = [t for t in ctx.params.get("tools") or [] if isinstance(t, dict)]
        tools = client_tools + box.specs
        messages = list(ctx.messages)
        log: list[dict[str, Any]] = []
        rounds = 0

        def meta() -> dict[str, Any]:
            return {"optillm_mcp": {"servers": box.connected, "errors": box.errors,
                                    "tools": sorted(box.tools), "rounds": rounds,
                                    "calls": log}}

        while True:
            final_round = rounds >= opts.mcp_max_rounds or not tools
            params: dict[str, Any] = ({"tools": None, "tool_choice": None} if final_round
                                      else {"tools": tools})
            completion = await asyncio.to_thread(ctx.complete, messages, answer=True, **params)
            choice = completion.choices[0]
            calls = [c for c in choice.message.extra.get("tool_calls") or []
                     if isinstance(c, dict)]
            if final_round or not calls:
                return Answer(choice.message.text, finish_reason=choice.finish_reason or "stop",
                              metadata=meta())
            if any((c.get("function") or {}).get("name") not in box.tools for c in calls) \
                    and any((c.get("function") or {}).get("name") in
                            {(t.get("function") or {}).get("name") for t in client_tools}
                            for c in calls):
                # one of the client's own tools: the client runs it
                return Answer(choice.message.text, finish_reason="tool_calls",
                              message=choice.message, metadata=meta())
            rounds += 1
            messages.append(Message("assistant", choice.message.content,
                                    {"tool_calls": calls}))
            results = await asyncio.gather(*(_execute(box, c) for c in calls))
            for call, (text, is_error) in zip(calls, results, strict=True):
                fn = call.get("function") or {}
                log.append({"tool": fn.get("name"), "arguments": fn.get("arguments"),
                            "is_error": is_error, "result": text[:500]})
                messages.append(Message("tool", text, {"tool_call_id": call.get("id", "")}))


async def _execute(box: Toolbox, call: dict[str, Any]) -> tuple[str, bool]:
    fn = call.get("function") or {}
    name = fn.get("name")
    if name not in box.tools:
        return f"error: unknown tool {name!r}; available: {', '.join(sorted(box.tools))}", True
    return await box.call(name, fn.get("arguments"))
