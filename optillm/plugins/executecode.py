"""``executecode``: run the Python in the request (or code the model writes) in the sandbox and
answer from its output.

After OptiLLM's executecode plugin. The fenced Python blocks of the last user message
(```` ```python ````, ```` ```py ```` or untagged blocks that compile) are joined, in order,
into one program and run by ``optillm.toolkit.sandbox.run_python`` (separate limited process, no
network, wall-clock and memory limits). When the request has no code and
``executecode_write_code`` is on, the model is first asked for a program that prints the
answer. The program's output (or its error) is added to the query and one final call
(``final=True``, streamed when the client streams, the client's parameters) answers from it.

Calls: 1 (code in the request, or no code and ``executecode_write_code`` off) or 2 (the model
writes the code first); depth the same. The code-writing call sets ``temperature`` 0.2.

Options (request body): ``executecode_timeout`` (seconds 0.5-60, default 10),
``executecode_memory_mb`` (64-4096, default 512), ``executecode_write_code`` (bool, default
true).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..options import opt
from ..toolkit.context import Answer, RunContext

SLUG = "executecode"
STREAMS = True
OUTPUT_CHARS = 6000

WRITE_PROMPT = ("Write a short, self-contained Python 3 program that computes the answer to "
                "the task below and prints it. Use only the standard library. Reply with one "
                "```python code block and nothing else.\n\nTask:\n{query}")

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Options:
    executecode_timeout: float = opt(10.0, ge=0.5, le=60, unit="seconds")
    executecode_memory_mb: int = opt(512, ge=64, le=4096, unit="MB")
    executecode_write_code: bool = True


def _compiles(code: str) -> bool:
    try:
        compile(code, "<code>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def extract_code(text: str, *, bare: bool = False) -> str | None:
    """The Python of ``text``'s fenced blocks (tagged python/py/python3, or untagged blocks
    that compile), joined in order; None when there is none. With ``bare``, a text without
    fences that compiles as a whole counts as code (a model that forgot the fence)."""
    blocks = []
    for lang, body in _FENCE.findall(text or ""):
        lang = lang.lower()
        body = body.strip("\n")
        if not body.strip():
            continue
        if lang in ("python", "py", "python3") or (not lang and _compiles(body)):
            blocks.append(body)
    if blocks:
        return "\n\n".join(blocks)
    stripped = (text or "").strip()
    if bare and stripped and "```" not in stripped and _compiles(stripped) \
            and re.search(r"\bprint\s*\(", stripped):
        return stripped
    return None


def describe(result: Any) -> str:
    """What a ``SandboxResult`` says, for a prompt: the output, then the error if any."""
    parts = []
    if result.stdout.strip():
        parts.append(f"Output:\n```\n{result.stdout.strip()[:OUTPUT_CHARS]}\n```")
    else:
        parts.append("Output: (nothing was printed)")
    if not result.ok:
        parts.append(f"The program failed: {result.error or 'unknown error'}")
        if result.stderr.strip():
            parts.append(f"Error output:\n```\n{result.stderr.strip()[-OUTPUT_CHARS:]}\n```")
    return "\n".join(parts)


def result_metadata(result: Any) -> dict[str, Any]:
    return {"stdout": result.stdout[:OUTPUT_CHARS], "stderr": result.stderr[-OUTPUT_CHARS:],
            "returncode": result.returncode, "timed_out": result.timed_out,
            "error": result.error, "ok": result.ok, "duration_s": round(result.duration_s, 3)}


def execute(code: str, timeout: float, memory_mb: int):
    """Run ``code`` in the sandbox (never with network)."""
    from ..toolkit import sandbox

    return sandbox.run_python(code, timeout=timeout, memory_mb=memory_mb,
                              allow_network=False)


def run(ctx: RunContext) -> Answer:
    opts: Options = ctx.options
    query = ctx.query
    code = extract_code(query)
    source = "request" if code else None
    if code is None and opts.executecode_write_code:
        reply = ctx.complete(ctx.with_query(WRITE_PROMPT.format(query=query)),
                             temperature=0.2)
        code = extract_code(reply.text, bare=True)
        source = "model" if code else None
    meta: dict[str, Any] = {"source": source, "code": code}
    if code is None:
        messages = list(ctx.messages)
    else:
        result = execute(code, opts.executecode_timeout, opts.executecode_memory_mb)
        meta.update(result_metadata(result))
        where = "in the request" if source == "request" else "written for this task"
        messages = ctx.with_query(
            f"{query}\n\nThe Python code {where} was executed.\n```python\n{code}\n```\n"
            f"{describe(result)}\n\nAnswer using the execution result above.")
    completion = ctx.complete(messages, final=True)
    finish = completion.choices[0].finish_reason if completion.choices else "stop"
    return Answer(completion.text, finish_reason=finish or "stop",
                  metadata={"optillm_executecode": meta})

