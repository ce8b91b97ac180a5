"""``pal``: program-aided answers, voted on what the programs print.

Program-aided language models (Gao et al., "PAL: Program-aided Language Models", arXiv
2211.10435): the model does not compute in prose; it writes a Python program whose variables
are the problem's quantities, and the interpreter does the arithmetic. With ``pal_k`` > 1 the
k programs are sampled in one call (``n=k``), each is run, and the printed answers are voted
on (the paper's PAL + self-consistency; Wang et al., arXiv 2203.11171). A small coder model
gains more from this than from prose votes: its programs are right more often than its mental
arithmetic.

With ``pal_prose`` = m > 0 the vote also takes m prose answers: the client's conversation as
it came (its system message; the model reasons in words), sampled in a second call that runs
beside the programs call. Prose and programs fail on different problems (Zhao et al.,
"Automatic Model Selection with Large Language Models for Reasoning", arXiv 2305.14333): a
program gets the arithmetic right and the plan wrong more often, prose the reverse, so an
answer both reach is the likelier one. The prose answers come first in the vote, so a tie goes
to prose: with ``pal_prose=1`` (greedy) the programs overrule the prose answer only when more
of them agree on another answer than on it.

Flow: 1 call with ``n=pal_k`` (the conversation with the last user message replaced by the
program-writing prompt; the client's system message is dropped from this call only, because it
asks for prose in a format the program replaces) -> the distinct programs are run
concurrently in ``optillm.toolkit.sandbox`` (no network, ``pal_timeout`` seconds and
``pal_memory_mb`` MiB each) -> the last line each prints is the sample's answer
(``answers.extract_answer`` with ``answer_format``; floats rounded to 6 decimals, so
``17.999999999999996`` and ``18`` agree) -> weighted-by-count vote (``answers.vote``).

The reply is the winning program in a ```` ```python ```` block, what it printed, and a last
line ``The answer is X.``. When no program prints an answer (no code, every run failed or
printed nothing) and ``pal_fallback`` is on, the first prose sample is the reply when there
is one; else one more call answers the client's conversation
as it came (its system message and sampling parameters; ``final=True``): calls 1 or 2, depth
the same. Not streamed on the main path (the answer exists once the programs have run).

Options (request body, flat or under ``"optillm"``):

- ``pal_k`` (int 1-32, default 5): programs sampled.
- ``pal_timeout`` (seconds 0.5-60, default 5) and ``pal_memory_mb`` (64-4096, default 256):
  each run's limits.
- ``pal_prose`` (int 0-32, default 0): prose answers voted with the programs.
- ``pal_fallback`` (bool, default true): answer directly when no program does.
- ``answer_format`` (``auto`` default, ``number``, ``boxed``, ``choice``, ``text``): how a
  printed line becomes an answer.

Sampling: the client's ``temperature`` when it sent one; else 0 for ``pal_k`` = 1 and 0.6
(OptiLLM's voting default) for more; the same rule, on ``pal_prose``, for the prose call (the
client's other parameters, ``max_tokens`` included, apply to it as sent).

Metadata on the choice, ``optillm_pal``: ``k``, ``programs`` (distinct programs run),
``answers`` (per sample, None when it gave none), ``runs`` (per distinct program: ``ok``,
``error``, ``stdout`` capped at 500 characters, ``duration_s``), ``votes``, ``winner``,
``chosen`` (the sample whose program is shown), ``agreement``, ``fallback``; with
``pal_prose``: ``prose_answers`` and ``source`` (``program`` or ``prose``: which kind of sample
the reply shows). ``answers`` lists the prose answers first, then the programs'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..options import opt
from ..plugins.executecode import execute, extract_code
from ..toolkit import answers
from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "pal"

DEFAULT_K = 5
DEFAULT_TEMPERATURE = 0.6
STDOUT_CHARS = 500

#: The problem comes first and the instruction after it: a small model obeys the last thing it
#: read, and the query often ends on its own answer-format request ("solve step by step ...").
#: With the instruction before the problem, Qwen2.5-Coder-0.5B wrote a program for 3 of 24 GSM8K
#: dev problems; with it after, for 24 of 24.
WRITE_PROMPT = ("Problem:\n{query}\n\nDo not solve this in prose. Instead write a Python 3 "
                "program that solves it: store each quantity the problem gives in a variable "
                "with a meaningful name, compute each quantity it needs step by step, and end "
                "by printing only the final answer (a number, without units or words). Reply "
                "with one ```python code block and nothing else.")


@dataclass(frozen=True)
class Options:
    pal_k: int = opt(DEFAULT_K, ge=1, le=32)
    pal_timeout: float = opt(5.0, ge=0.5, le=60, unit="seconds")
    pal_memory_mb: int = opt(256, ge=64, le=4096, unit="MB")
    pal_prose: int = opt(0, ge=0, le=32)
    pal_fallback: bool = True
    answer_format: str = opt("auto", choices=answers.ANSWER_FORMATS)


def printed_answer(stdout: str, answer_format: str = "auto") -> str | None:
    """The answer a program printed: its last non-empty line read by
    ``answers.extract_answer`` (the whole output when that line holds none), a float rounded
    to 6 decimals. None when nothing answer-like was printed."""
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    if not lines:
        return None
    found = answers.extract_answer(lines[-1], answer_format)
    if found is None:
        found = answers.extract_answer(stdout, answer_format)
    return _rounded(found) if found is not None else None


def _rounded(answer: str) -> str:
    try:
        value = float(answer)
    except ValueError:
        return answer
    if not math.isfinite(value) or value == int(value) and "." not in answer:
        return answer
    return answers.normalize(f"{round(value, 6):.6f}")


def _program_messages(ctx: RunContext) -> list[Message]:
    prompt = WRITE_PROMPT.format(query=ctx.query)
    return [m for m in ctx.with_query(prompt) if m.role not in ("system", "developer")]


def _default_temperature(ctx: RunContext, k: int) -> float:
    return ctx.sampling.get("temperature", 0.0 if k == 1 else DEFAULT_TEMPERATURE)


def run(ctx: RunContext) -> Answer:
    opts: Options = ctx.options
    k, m = opts.pal_k, opts.pal_prose

    def programs() -> list[Any]:
        return ctx.complete(_program_messages(ctx), n=k,
                            temperature=_default_temperature(ctx, k)).choices[:k]

    def prose() -> list[Any]:
        return ctx.complete(n=m, answer=True,
                            temperature=_default_temperature(ctx, m)).choices[:m]

    if m:
        choices, prose_choices = ctx.map(lambda call: call(), (programs, prose))
    else:
        choices, prose_choices = programs(), []
    codes = [extract_code(c.text, bare=True) for c in choices]
    distinct = list(dict.fromkeys(c for c in codes if c))
    results = ctx.map(lambda code: execute(code, opts.pal_timeout, opts.pal_memory_mb),
                      distinct)
    by_code = dict(zip(distinct, results, strict=True))
    program_answers = [printed_answer(by_code[c].stdout, opts.answer_format)
                       if c and by_code[c].ok else None for c in codes]
    prose_answers = [answers.extract_answer(c.text, opts.answer_format) for c in prose_choices]
    result = answers.vote(prose_answers + program_answers)
    record: dict[str, Any] = {
        "k": k, "programs": len(distinct), "answers": prose_answers + program_answers,
        "runs": [_run_record(by_code[c]) for c in distinct], "votes": result.tally,
        "winner": result.answer, "chosen": result.index, "agreement": result.share,
        "fallback": False}
    if m:
        record["prose_answers"] = prose_answers
        record["source"] = "prose" if 0 <= result.index < m else "program"
    if result.answer is not None and result.index < m:
        chosen = prose_choices[result.index]
        return Answer(chosen.text, finish_reason=chosen.finish_reason or "stop",
                      metadata={"optillm_pal": record})
    if result.answer is not None:
        code = codes[result.index - m]
        output = by_code[code].stdout.strip()
        text = (f"```python\n{code}\n```\n\nOutput:\n```\n{output[-STDOUT_CHARS:]}\n```\n\n"
                f"The answer is {result.answer}.")
        return Answer(text, finish_reason="stop", metadata={"optillm_pal": record})
    if not opts.pal_fallback:
        text = "No program printed an answer."
        return Answer(text, finish_reason="stop", metadata={"optillm_pal": record})
    record["fallback"] = True
    if prose_choices:  # a prose answer without a final answer line is still the answer
        first = prose_choices[0]
        return Answer(first.text, finish_reason=first.finish_reason or "stop",
                      metadata={"optillm_pal": record})
    completion = ctx.complete(final=True)
    finish = completion.choices[0].finish_reason if completion.choices else "stop"
    return Answer(completion.text, finish_reason=finish or "stop",
                  metadata={"optillm_pal": record})


def _run_record(result: Any) -> dict[str, Any]:
    return {"ok": result.ok, "error": result.error, "stdout": result.stdout[:STDOUT_CHARS],
            "duration_s": round(result.duration_s, 3)}
