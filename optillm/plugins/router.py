"""``router``: choose an approach per query with a transparent rule set, then run it.

OptiLLM's router plugin asks a trained classifier; this one uses rules anyone can read and
predict, over the last user message (and the conversation's length):

===============  ===========================================================  ===============
class            features (each match scores 1)                               default slug
===============  ===========================================================  ===============
long_context     the conversation is at least ``router_long_chars`` chars     memory
code             code fences, ``def``/``class``/``function``/``import`` lines, cot_reflection
                 code words (python, javascript, bug, compile, regex, SQL...)
math             arithmetic like ``3 * 4``, LaTeX, math words (solve,          majority_voting
                 equation, integral, probability, how many, percent...)
factual          a short question (< 300 chars) opening with who/what/when/    re2
                 where/which/define/name, or asking for a capital, date...
open_ended       nothing above matched                                        moa
===============  ===========================================================  ===============

``long_context`` wins whenever its threshold is met; otherwise the class with the most
matches among code, math and factual (ties in that order); none -> ``open_ended``. The table
class -> slug is ``DEFAULT_TABLE`` with ``router_table`` (a partial dict) merged over it. The
chosen approach runs through ``ctx.run_approach`` on the same request (same body options,
shared budget; its usage is summed by the pipeline); an unregistered slug is a 404.

**A learned table** (``--router-table router.yaml``, written by ``optillm-eval fit-router``
from the deployment's own eval records; ``optillm.toolkit.router_table``) replaces the rules
above unless the request sends its own ``router_table``: the query's cell (task guess/length
bucket) picks the approach and its options (defaults below the request's own fields). With
the table, ``auto`` (the default ``--approach``) routes here, so plain requests are routed.

Calls: those of the chosen approach, no more (classification makes no call). Critical path:
the chosen approach's. The answer carries ``optillm_router``: ``{"class", "features",
"scores", "approach"}`` (rules) or ``{"approach", "options", "cell", "features", "table"}``
(learned table), besides the chosen approach's own metadata.

Options (request body): ``router_table`` (dict class -> slug), ``router_long_chars`` (int,
100-10000000, default 8000).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import OptillmError
from ..options import opt
from ..toolkit import router_table as learned
from ..toolkit.context import Answer, RunContext

SLUG = "router"

CLASSES = ("long_context", "code", "math", "factual", "open_ended")

DEFAULT_TABLE = MappingProxyType({
    "long_context": "memory", "code": "cot_reflection", "math": "majority_voting",
    "factual": "re2", "open_ended": "moa"})

_CODE_FEATURES = {
    "code_fence": re.compile(r"```"),
    "code_definition": re.compile(r"(?m)^\s*(def|class|function|import|from\s+\S+\s+import|"
                                  r"#include|public\s+static|fn|func|const|let|var)\b"),
    "code_words": re.compile(r"(?i)\b(python|javascript|typescript|java|c\+\+|rust|golang|"
                             r"sql|regex|function|compile[sd]?|bug|stack ?trace|exception|"
                             r"refactor|implement|unit tests?|api|script)\b"),
    "code_syntax": re.compile(r"[a-zA-Z_]\w*\([^)]*\)\s*[{:;]|=>|->\s*\w|\w+\.\w+\("),
}
_MATH_FEATURES = {
    "arithmetic": re.compile(r"\d\s*[-+*/^×÷=]\s*\d"),
    "latex": re.compile(r"\\(frac|sqrt|sum|int|cdot|times|le|ge)\b|\$[^$]+\$"),
    "math_words": re.compile(r"(?i)\b(solve|calculate|compute|equation|integral|derivative|"
                             r"probability|prove|theorem|how many|how much|percent(age)?|"
                             r"sum of|product of|remainder|divisible|prime|factorial|"
                             r"average|ratio|polynomial|matrix)\b"),
}
_FACTUAL_FEATURES = {
    "wh_question": re.compile(r"(?i)^\s*(who|what|when|where|which|whose|define|name)\b"),
    "fact_words": re.compile(r"(?i)\b(capital of|population of|born|founded|invented|"
                             r"discovered|located|year|date of|stands for|meaning of)\b"),
}
FACTUAL_MAX_CHARS = 300


@dataclass(frozen=True)
class Options:
    router_table: dict | None = None
    router_long_chars: int = opt(8000, ge=100, le=10_000_000, unit="characters")

    def __post_init__(self):
        table = self.router_table
        if table is not None:
            unknown = [k for k in table if k not in CLASSES]
            if unknown:
                raise ValueError(f"router_table has unknown classes {unknown}; the classes "
                                 f"are {', '.join(CLASSES)}")
            if not all(isinstance(v, str) and v.strip() for v in table.values()):
                raise ValueError("router_table values must be approach slugs")
            if SLUG in table.values():
                raise ValueError("router_table may not route to the router itself")
            object.__setattr__(self, "router_table", MappingProxyType(dict(table)))


def classify(query: str, conversation_chars: int, long_chars: int = 8000
             ) -> tuple[str, list[str], dict[str, int]]:
    """``(class, matched feature names, scores per class)`` for a query (see the table)."""
    features: list[str] = []
    scores = {c: 0 for c in CLASSES}
    if conversation_chars >= long_chars:
        features.append("long_input")
        scores["long_context"] = 1
    for cls, table in (("code", _CODE_FEATURES), ("math", _MATH_FEATURES)):
        for name, pattern in table.items():
            if pattern.search(query):
                features.append(name)
                scores[cls] += 1
    if len(query) < FACTUAL_MAX_CHARS:
        for name, pattern in _FACTUAL_FEATURES.items():
            if pattern.search(query):
                features.append(name)
                scores["factual"] += 1
    if scores["long_context"]:
        return "long_context", features, scores
    best = max(("code", "math", "factual"), key=lambda c: scores[c])  # first wins ties
    return (best if scores[best] else "open_ended"), features, scores


def run_learned(ctx: RunContext, path: str) -> Answer:
    """Route by the learned table at ``path`` (see the module docstring).

    Raises: OptillmError (500) when the file is not a router table.
    """
    try:
        table = learned.load(path)
    except learned.RouterTableError as exc:
        raise OptillmError(f"--router-table: {exc}") from None
    choice, cell, features = table.choose(ctx.query)
    answer = ctx.run_approach(choice.approach, options=choice.options, params=choice.params)
    record = {"approach": choice.approach, "options": dict(choice.options),
              "params": dict(choice.params), "cell": cell, "features": features, "table": path}
    return Answer(answer.text, finish_reason=answer.finish_reason,
                  metadata={**answer.metadata, "optillm_router": record},
                  logprobs=answer.logprobs)


def run(ctx: RunContext) -> Answer:
    opts = ctx.options
    if ctx.settings.router_table and opts.router_table is None:
        return run_learned(ctx, ctx.settings.router_table)
    table = {**DEFAULT_TABLE, **(opts.router_table or {})}
    chars = sum(len(m.text) for m in ctx.messages)
    cls, features, scores = classify(ctx.query, chars, opts.router_long_chars)
    slug = table[cls]
    answer = ctx.run_approach(slug)
    record = {"class": cls, "features": features, "scores": scores, "approach": slug}
    return Answer(answer.text, finish_reason=answer.finish_reason,
                  metadata={**answer.metadata, "optillm_router": record},
                  logprobs=answer.logprobs)
