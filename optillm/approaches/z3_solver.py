"""Z3/SymPy solver: let a formal solver do the logic or algebra, then answer from its output.

After OptiLLM's ``z3_solver`` (the idea of handing the formal part to a solver is that of
SatLM, Ye et al., arXiv 2305.09656, and Logic-LM, Pan et al., arXiv 2305.12295):

1. Triage: the model says whether the problem suits a formal solver (YES/NO; the reply is
   parsed leniently by ``parse_yes_no``, and anything unclear counts as NO).
2. If it does: the model writes a self-contained Python program using ``z3`` or ``sympy``
   that prints its result; the last code block is run in ``optillm.toolkit.sandbox`` (no network, no
   files outside a temporary directory, ``z3_timeout`` seconds, ``z3_memory_mb`` MiB). When
   the run fails (an exception, a time-out, no output, no code at all) the error goes back to
   the model, which writes a repaired program: at most ``z3_max_attempts`` programs in all.
3. A final call answers the question from the solver's output (``final=True``, so it
   streams). If the problem did not suit a solver, or every attempt failed, the final call
   answers the conversation plainly.

Calls: 1 + attempts + 1, attempts between 1 and ``z3_max_attempts`` (just 2 when the triage
says NO). Critical path: the same, all sequential. The triage call sets ``temperature=0`` and
``max_tokens=16``; the programs and the final answer use the client's sampling parameters.

The reasoning trace (``return_full_response``) is each program with its output or error,
then the answer; the choice carries ``optillm_z3``: ``suitable``, ``solver_used``,
``attempts``, ``output`` (the successful program's stdout, or None) and ``errors``.

Options (request body): ``z3_max_attempts`` (int, 1-5, default 3), ``z3_timeout`` (seconds,
1-60, default 10), ``z3_memory_mb`` (int, 64-2048, default 512).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..options import opt
from ..toolkit.answers import last_code_block
from ..toolkit.context import Answer, RunContext
from ..toolkit.sandbox import run_python
from ..types import Message

SLUG = "z3"
STREAMS = True

#: Characters of a program's output or error passed back to the model.
MAX_FEEDBACK = 2000

TRIAGE_PROMPT = (
    "Could the following problem be solved exactly by writing a short Python program that "
    "uses a formal solver (the Z3 SMT solver for logic, constraints and integer puzzles, or "
    "SymPy for algebra, equations and calculus)? Reply with YES or NO only.\n\n"
    "Problem:\n{query}")

CODE_PROMPT = (
    "Write a self-contained Python program that solves the problem below using z3 "
    "(`from z3 import *`) or sympy. The program must print its result with print(). It may "
    "not read input, use the network or write files. Put the whole program in one "
    "```python code block.\n\nProblem:\n{query}")

REPAIR_PROMPT = (
    "Running that program failed:\n\n{error}\n\nWrite a corrected, complete program that "
    "prints its result, in one ```python code block.")

ANSWER_PROMPT = (
    "{query}\n\nA solver program was written and run for this problem.\n\n"
    "Program:\n```python\n{code}\n```\n\nIts output:\n```\n{output}\n```\n\n"
    "Using the solver's output, answer the question above clearly and completely.")


@dataclass(frozen=True)
class Options:
    z3_max_attempts: int = opt(3, ge=1, le=5)
    z3_timeout: float = opt(10.0, ge=1, le=60, unit="seconds")
    z3_memory_mb: int = opt(512, ge=64, le=2048, unit="MB")


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str) -> bool:
    """True when the first yes/no word in ``text`` is "yes"; False for "no", or for text
    with neither (an unclear triage sends the problem down the plain path)."""
    match = _YES_NO.search(text or "")
    return bool(match) and match.group(1).lower() == "yes"


def extract_program(text: str) -> str | None:
    """The program in a reply: its last fenced code block, else the whole reply when it
    looks like Python (an import or a print call); None when there is none."""
    block = last_code_block(text or "")
    if block is not None and block.strip():
        return block.strip("\n")
    stripped = (text or "").strip()
    if re.search(r"^\s*(?:from\s+\w+\s+import|import\s+\w+)|\bprint\(", stripped,
                 re.MULTILINE):
        return stripped
    return None


def _clip(text: str, limit: int = MAX_FEEDBACK) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def run(ctx: RunContext) -> Answer:
    opts = ctx.options
    query = ctx.query
    triage = ctx.complete(ctx.with_query(TRIAGE_PROMPT.format(query=query)),
                          temperature=0.0, max_tokens=16)
    suitable = parse_yes_no(triage.text)
    attempts = 0
    errors: list[str] = []
    trace: list[str] = []
    code = output = None
    if suitable:
        messages = ctx.with_query(CODE_PROMPT.format(query=query))
        while attempts < opts.z3_max_attempts:
            attempts += 1
            reply = ctx.complete(messages).text
            program = extract_program(reply)
            if program is None:
                summary = feedback = "the reply contained no Python code block"
            else:
                result = run_python(program, timeout=opts.z3_timeout,
                                    memory_mb=opts.z3_memory_mb)
                if result.ok and result.stdout.strip():
                    code, output = program, result.stdout.strip()
                    trace.append(f"Attempt {attempts}:\n```python\n{program}\n```\n"
                                 f"Output:\n{output}")
                    break
                if result.ok:
                    summary = feedback = "the program ran but printed nothing"
                else:
                    summary = result.error or "the program failed"
                    feedback = summary if result.timed_out else _clip(result.stderr) or summary
            errors.append(summary)
            trace.append(f"Attempt {attempts}:\n```python\n{program or reply}\n```\n"
                         f"Error:\n{feedback}")
            # only the latest program and its error: the conversation stays short
            messages = ctx.with_query(CODE_PROMPT.format(query=query)) + [
                Message("assistant", reply),
                Message("user", REPAIR_PROMPT.format(error=feedback))]
    if output is not None:
        final = ctx.complete(ctx.with_query(ANSWER_PROMPT.format(
            query=query, code=code, output=_clip(output))), final=True)
    else:
        final = ctx.complete(ctx.conversation(), final=True)
    trace.append(final.text)
    finish = final.choices[0].finish_reason if final.choices else "stop"
    metadata = {"optillm_z3": {"suitable": suitable, "solver_used": output is not None,
                               "attempts": attempts, "output": output, "errors": errors},
                **ctx.budget_metadata()}
    return Answer(final.text, finish_reason=finish or "stop",
                  reasoning="\n\n".join(trace), metadata=metadata)
