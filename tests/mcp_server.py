"""A real local MCP server over stdio for the ``mcp`` plugin's tests (the SDK's ``MCPServer``,
called FastMCP before mcp 2). Run: ``python -m tests.mcp_server`` or ``python tests/mcp_server.py``.

Tools: ``add(a, b)`` -> the sum; ``shout(text)`` -> upper case; ``fail(reason)`` -> a tool
error; ``slow(seconds)`` -> sleeps, then "done".
"""

from __future__ import annotations

import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("optillm-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Return the text in upper case."""
    return text.upper()


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the given reason."""
    raise ToolError(f"tool failed: {reason}")


@server.tool()
def slow(seconds: float) -> str:
    """Sleep for a while, then answer."""
    time.sleep(min(seconds, 30))
    return "done"


if __name__ == "__main__":
    server.run()
