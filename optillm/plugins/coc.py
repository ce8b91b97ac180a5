"""``coc``: Chain of Code (Li et al., "Chain of Code: Reasoning with a Language Model-Augmented
Code Emulator", arXiv 2312.04474).

The model writes a Python program for the problem; it runs in ``optillm.toolkit.sandbox`` (no
network,
time and memory limits). When a run fails, the model is shown the error and asked for a
corrected program, up to ``coc_max_attempts`` runs in all. When no run succeeds (the code
needs semantic steps no interpreter can do, or stays broken), the model emulates the
interpreter, the paper's "LMulator": it traces the last program and states the output it would
print. One final call (``final=True``, streamed when the client streams, the client's
parameters) answers the question from the program and its output.

Calls: 1 (write) + (failed runs before the last attempt: at most ``coc_max_attempts - 1``
fixes) + (1 emulation when every run failed) + 1 (answer); at most ``coc_max_attempts + 2``,
at least 2. Each call needs the previous one's result, so the depth equals the call count.
The write/fix calls set ``temperature`` 0.2, the emulation 0.

Options (request body): ``coc_max_attempts`` (int 1-5, default 2), ``coc_timeout`` (seconds
0.5-60, default 10), ``coc_memory_mb`` (64-4096, default 512).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..options import opt
from ..toolkit.context import Answer, RunContext
from .executecode import describe, execute, extract_code, result_metadata

SLUG = "coc"
STREAMS = True

WRITE_PROMPT = ("Solve the problem below by writing Python 3 code. Compute what can be computed; "
                "for steps that need judgement or world knowledge, write the reasoning as "
                "comments and assign the values you decide. End by printing the final answer. "
                "Reply with one ```python code block.\n\nProblem:\n{query}")
FIX_PROMPT = ("This program for the problem below failed.\n\nProblem:\n{query}\n\n"
              "```python\n{code}\n```\n{result}\n\nWrite a corrected program that prints the "
              "final answer. Reply with one ```python code block.")
EMULATE_PROMPT = ("Act as a Python interpreter. Trace the program below step by step; where a "
                  "line cannot run (an undefined helper, a semantic question), decide its "
                  "value as a careful human would and carry on. Then give exactly what the "
                  "program prints, on a last line starting with 'Output:'.\n\n"
                  "```python\n{code}\n```")
ANSWER_PROMPT = ("{query}\n\nA program was written for this problem:\n```python\n{code}\n```\n"
                 "{how}:\n```\n{output}\n```\n\nUsing this, give the final answer.")


@dataclass(frozen=True)
class Options:
    coc_max_attempts: int = opt(2, ge=1, le=5)
    coc_timeout: float = opt(10.0, ge=0.5, le=60, unit="seconds")
    coc_memory_mb: int = opt(512, ge=64, le=4096, unit="MB")


def emulated_output(text: str) -> str:
    """The output an emulation reply states: what follows its last ``Output:``, else the
    reply's last non-empty line (a weak model may skip the marker)."""
    matches = list(re.finditer(r"output\s*:\s*", text or "", re.IGNORECASE))
    if matches:
        tail = text[matches[-1].end():].strip().strip("`").strip()
        if tail:
            return tail[:2000]
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip().strip("`")]
    return lines[-1][:2000] if lines else ""


def run(ctx: RunContext) -> Answer:
    opts: Options = ctx.options
    query = ctx.query
    attempts: list[dict[str, Any]] = []
    reply = ctx.complete(ctx.with_query(WRITE_PROMPT.format(query=query)), temperature=0.2)
    code = extract_code(reply.text, bare=True)
    output, how = None, None
    last_code = code
    for attempt in range(opts.coc_max_attempts):
        if code is None:
            attempts.append({"code": None, "error": "no code in the reply"})
        else:
            result = execute(code, opts.coc_timeout, opts.coc_memory_mb)
            attempts.append({"code": code, **result_metadata(result)})
            if result.ok and result.stdout.strip():
                output, how = result.stdout.strip(), "Executing it printed"
                break
        if attempt + 1 == opts.coc_max_attempts:
            break
        shown = describe(result) if code is not None else "The reply contained no code."
        fix = ctx.complete(ctx.with_query(FIX_PROMPT.format(
            query=query, code=code or reply.text, result=shown)), temperature=0.2)
        reply = fix
        code = extract_code(fix.text, bare=True)
        last_code = code or last_code
    mode = "executed"
    if output is None:
        mode = "emulated"
        program = last_code or reply.text
        emulation = ctx.complete(ctx.with_query(EMULATE_PROMPT.format(code=program)),
                                 temperature=0.0)
        output = emulated_output(emulation.text) or "(no output)"
        how = "Running it was emulated step by step (it could not be executed); it prints"
        code = program
    completion = ctx.complete(ctx.with_query(ANSWER_PROMPT.format(
        query=query, code=code, how=how, output=output[:6000])), final=True)
    finish = completion.choices[0].finish_reason if completion.choices else "stop"
    return Answer(completion.text, finish_reason=finish or "stop",
                  reasoning=f"```python\n{code}\n```\n{how}:\n{output}\n\n{completion.text}",
                  metadata={"optillm_coc": {"mode": mode, "output": output,
                                            "attempts": attempts}})
