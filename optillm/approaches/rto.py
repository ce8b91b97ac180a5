"""Round-trip optimisation (RTO): write code, describe it, rewrite it from the description.

After OptiLLM's ``rto`` and "Patched RTC: evaluating LLMs for diverse software development
tasks" (Sharma, arXiv 2407.16557), which builds on round-trip correctness (Allamanis et al.,
arXiv 2402.08699):

1. C1: the model answers the conversation with code.
2. Q2: the model describes C1 as a natural-language specification, detailed enough to
   re-implement it, without code.
3. C2: the model writes code from Q2 alone (in place of the user's last message).
4. When the code blocks of C1 and C2 (``extract_code``; whitespace-normalised by
   ``normalize_code``) are the same, the round trip confirmed C1, which is returned. Otherwise
   a final call (``final=True``, so it streams) sees the question and both versions and
   writes the best one.

Calls: 3 when C1 and C2 agree, else 4; all sequential, so the critical path is the same.
Every call uses the client's sampling parameters (the algorithm sets none); C1, C2 and the
final call are answer calls (they get ``response_format`` and the like).

The reasoning trace (``return_full_response``) is C1, Q2, C2 and the result; the choice
carries ``optillm_rto``: ``identical`` (bool), ``c1``, ``c2`` (the extracted code) and
``specification``.
"""

from __future__ import annotations

import re

from ..toolkit.answers import last_code_block
from ..toolkit.context import Answer, RunContext

SLUG = "rto"
STREAMS = True

CODE_PROMPT = ("{query}\n\nWrite the code that solves this. Put the complete code in one "
               "fenced code block.")

DESCRIBE_PROMPT = (
    "Here is some code:\n\n{code}\n\nDescribe precisely what this code does, as a "
    "natural-language specification someone could implement it from: its inputs, outputs, "
    "behaviour and edge cases. Do not include any code.")

MERGE_PROMPT = (
    "{query}\n\nTwo candidate solutions were written for this task.\n\n"
    "Solution 1:\n{c1}\n\nSolution 2:\n{c2}\n\n"
    "Compare them, then write the single best, correct version of the code, taking what is "
    "right from each. Put the complete code in one fenced code block.")


def extract_code(text: str) -> str:
    """The last fenced code block of ``text``, else the whole text (stripped)."""
    block = last_code_block(text or "")
    return (block if block is not None and block.strip() else (text or "")).strip()


def normalize_code(code: str) -> str:
    """``code`` with every run of whitespace made one space and blank lines dropped, so that
    indentation width and trailing spaces do not make two versions differ."""
    return "\n".join(re.sub(r"\s+", " ", line).strip() for line in code.splitlines()
                     if line.strip())


def run(ctx: RunContext) -> Answer:
    query = ctx.query
    c1_text = ctx.complete(ctx.with_query(CODE_PROMPT.format(query=query)), answer=True).text
    c1 = extract_code(c1_text)
    spec = ctx.complete(ctx.with_query(DESCRIBE_PROMPT.format(code=c1))).text.strip()
    c2_text = ctx.complete(ctx.with_query(CODE_PROMPT.format(query=spec)), answer=True).text
    c2 = extract_code(c2_text)
    identical = normalize_code(c1) == normalize_code(c2)
    trace = [f"C1:\n{c1_text}", f"Specification (Q2):\n{spec}", f"C2:\n{c2_text}"]
    finish = "stop"
    if identical:
        text = c1_text
    else:
        final = ctx.complete(ctx.with_query(MERGE_PROMPT.format(
            query=query, c1=f"```\n{c1}\n```", c2=f"```\n{c2}\n```")), final=True)
        text = final.text
        finish = (final.choices[0].finish_reason if final.choices else None) or "stop"
        trace.append(f"Merged:\n{text}")
    metadata = {"optillm_rto": {"identical": identical, "c1": c1, "c2": c2,
                                "specification": spec}, **ctx.budget_metadata()}
    return Answer(text, finish_reason=finish, reasoning="\n\n".join(trace), metadata=metadata)
