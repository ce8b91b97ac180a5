"""LEAP: learn principles from the mistakes the model makes on the prompt's own examples.

Zhang et al., "In-Context Principle Learning from Mistakes", arXiv 2402.05403. Steps:

1. Extraction (1 call): the model lists the few-shot examples in the conversation (sent whole,
   followed by the request) as JSON ``[{"question", "answer"}]``. The reply is read leniently
   (``parse_examples``): JSON, else a fenced block, else the first ``[...]`` in it, else
   "Question:/Answer:" pairs in the reply or in the conversation's messages, else earlier
   user/assistant turns (chat-style few-shot), else no examples.
2. Zero-shot answers (E calls, concurrent): each example's question answered step by step.
3. Mistakes (no call): an answer is a mistake when its extracted final answer
   (``optillm.toolkit.answers``) is not equivalent to the example's given answer.
4. Low-level principles (M calls, concurrent): one per mistake.
5. High-level principles (1 call, only when M > 0): the low-level ones consolidated.
6. The answer (1 call, ``final=True``): the conversation with the principles appended to the
   last user message. With no examples (or no mistakes) this is a plain call.

Calls: ``2 + E + M + (1 if M > 0 else 0)`` with E the examples kept (at most
``leap_max_examples``) and M <= E the mistakes; at most ``3 + 2E``. Critical-path depth: 5
(2 without examples or mistakes). Sampling: extraction, mistakes and principles run at
``leap_temperature`` (the algorithm sets it); the zero-shot answers and the final answer use
the client's sampling parameters.

Options (request body): ``leap_max_examples`` (int, 0-16, default 4; 0 skips learning),
``leap_temperature`` (float, 0-2, default 0.3, for the extraction and principle calls).
The choice carries ``optillm_leap`` (examples, mistakes, principles); the reasoning trace is
returned with ``return_full_response``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..options import opt
from ..toolkit.answers import equivalent, extract_answer
from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "leap"
STREAMS = True

MAX_EXAMPLES = 16


@dataclass(frozen=True)
class Options:
    leap_max_examples: int = opt(4, ge=0, le=MAX_EXAMPLES)
    leap_temperature: float = opt(0.3, ge=0, le=2)


@dataclass(frozen=True)
class Example:
    question: str
    answer: str


# -- prompts ----------------------------------------------------------------------------------

EXTRACTION_PROMPT = (
    "Do not answer the question above. Instead, list the worked examples (a question "
    "together with its correct answer) that this conversation contains. Reply with only a "
    'JSON list, for example:\n[{"question": "What is 2+3?", "answer": "5"}]\n'
    "Reply with [] when there are no examples.")


def zero_shot_prompt(question: str) -> str:
    return (f"{question}\n\nThink step by step, then end with a line "
            f"'Final answer: <answer>'.")


def principle_prompt(example: Example, attempt: str) -> str:
    return (f"Question: {example.question}\n\nAn attempted solution:\n{attempt}\n\n"
            f"The correct answer is: {example.answer}\n\n"
            "The attempt is wrong. Say briefly what mistake it made, then state one or two "
            "general principles that would have avoided it, as a short bullet list.")


def consolidation_prompt(principles: list[str]) -> str:
    body = "\n\n".join(f"Set {i}:\n{p}" for i, p in enumerate(principles, 1))
    return ("Below are principles learned from mistakes on similar questions. Merge them "
            "into at most five short, general, non-overlapping principles, as a numbered "
            f"list, and nothing else.\n\n{body}")


def final_query(query: str, principles: str) -> str:
    return (f"{query}\n\nWhile answering, keep in mind these principles, learned from "
            f"mistakes on similar questions:\n{principles}")


# -- parsing model output -----------------------------------------------------------------------

_FENCED = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
_BRACKETS = re.compile(r"\[.*\]", re.DOTALL)
_QA = re.compile(r"(?:^|\n)\s*(?:Q|Question|Input)\s*\d*\s*[:.]\s*(?P<q>.+?)\s*\n\s*"
                 r"(?:A|Answer|Output)\s*\d*\s*[:.]\s*(?P<a>[^\n]+)", re.IGNORECASE | re.DOTALL)


def _examples_from_json(data: Any) -> list[Example]:
    if isinstance(data, dict):  # {"examples": [...]} or a single example
        data = data.get("examples", [data])
    if not isinstance(data, list):
        return []
    out = []
    for item in data:
        if not isinstance(item, dict):
            continue
        q, a = item.get("question"), item.get("answer")
        if isinstance(q, (str, int, float)) and isinstance(a, (str, int, float)) \
                and str(q).strip() and str(a).strip():
            out.append(Example(str(q).strip(), str(a).strip()))
    return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def parse_examples(reply: str, prompt: str = "") -> list[Example]:
    """The examples in an extraction ``reply``: JSON, a fenced block, the first ``[...]``,
    then "Question:/Answer:" (or "Q:/A:") pairs in the reply, then in ``prompt``; [] when
    none. Never raises."""
    reply = reply or ""
    candidates = [reply.strip()]
    candidates += [m.group(1).strip() for m in _FENCED.finditer(reply)]
    bracket = _BRACKETS.search(reply)
    if bracket:
        candidates.append(bracket.group(0))
    for text in candidates:
        found = _examples_from_json(_loads(text))
        if found:
            return found
    for text in (reply, prompt or ""):
        found = [Example(m.group("q").strip(), m.group("a").strip())
                 for m in _QA.finditer(text)]
        if found:
            return found
    return []


def turn_examples(messages) -> list[Example]:
    """Chat-style few-shot: each earlier user turn answered by an assistant turn (the last
    user message, the query, is not an example)."""
    out = []
    for prev, cur in zip(messages, messages[1:], strict=False):
        if prev.role == "user" and cur.role == "assistant" and prev.text.strip() \
                and cur.text.strip():
            out.append(Example(prev.text.strip(), cur.text.strip()))
    return out


def is_mistake(attempt: str, example: Example) -> bool:
    """True when the attempt's final answer is missing or not equivalent to the given one."""
    got = extract_answer(attempt)
    want = extract_answer(example.answer) or example.answer.strip()
    return got is None or not equivalent(got, want)


# -- the run ---------------------------------------------------------------------------------

def run(ctx: RunContext) -> Answer:
    opts = ctx.options
    temp = opts.leap_temperature
    trace: list[str] = []
    examples: list[Example] = []
    if opts.leap_max_examples:
        reply = ctx.complete(ctx.conversation(Message("user", EXTRACTION_PROMPT)),
                             temperature=temp).text
        examples = (parse_examples(reply, "\n\n".join(m.text for m in ctx.messages))
                    or turn_examples(ctx.messages))[:opts.leap_max_examples]
    trace.append(f"Examples found: {len(examples)}")

    attempts = ctx.map(lambda ex: ctx.complete(ctx.with_query(zero_shot_prompt(ex.question)))
                       .text, examples)
    wrong = [(ex, att) for ex, att in zip(examples, attempts, strict=True)
             if is_mistake(att, ex)]
    trace.append(f"Mistakes: {len(wrong)}")

    low = ctx.map(lambda pair: ctx.complete(ctx.with_query(principle_prompt(*pair)),
                                            temperature=temp).text, wrong)
    principles = ""
    if low:
        principles = ctx.complete(ctx.with_query(consolidation_prompt(low)),
                                  temperature=temp).text.strip()
        trace.append(f"Principles:\n{principles}")

    query = final_query(ctx.query, principles) if principles else ctx.query
    final = ctx.complete(ctx.with_query(query), final=True)
    finish = (final.choices[0].finish_reason if final.choices else None) or "stop"
    metadata = {"optillm_leap": {
        "examples": [{"question": e.question, "answer": e.answer} for e in examples],
        "mistakes": [{"question": e.question, "attempt": a} for e, a in wrong],
        "low_level_principles": low,
        "principles": principles}}
    reasoning = "\n\n".join(trace + [f"Answer:\n{final.text}"])
    return Answer(final.text, finish_reason=finish, reasoning=reasoning, metadata=metadata)
