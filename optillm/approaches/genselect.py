"""GenSelect: N candidate solutions, then the model compares them and selects the best one.

Generative solution selection from NVIDIA's AIMO-2 winning solution (Moshkov et al.,
"AIMO-2 Winning Solution: Building State-of-the-Art Mathematical Reasoning Models with
OpenMathReasoning dataset", arXiv 2504.16891): instead of counting answers, the model reads the
candidates side by side, reasons about them and names the most promising one ("Judgment: N");
several selection samples are voted on, by the answers of the candidates they picked, as in
the paper. Here (after OptiLLM's ``genselect`` plugin) the full candidates are compared, not
summaries of them.

Call pattern: the N candidates come from one call with ``n=N`` (emulated where the upstream
lacks ``n``). Then, by ``genselect_mode``:

- ``batch``: one comparison call over all candidates with ``n=genselect_votes``; each reply's
  choice is parsed (``parse_selection``, robust to chatter and malformed replies); the picks
  vote by the extracted answers of the picked candidates (``optillm.toolkit.answers``), and the most
  picked candidate with the winning answer is returned. Two calls deep.
- ``tournament``: knock-out rounds of pairwise comparisons (``n=genselect_votes`` each); the
  matches of a round run concurrently, a bye advances the odd one out, a drawn match (no
  parsable pick, or a tie) goes to the candidate whose answer more candidates share, then to
  the earlier one; two candidates with the same answer need no comparison. ``ceil(log2 N)``
  rounds, ``N-1`` matches at most.

When every candidate states the same answer, no comparison is made
(``genselect_skip_unanimous``). In batch mode, when no comparison reply names a candidate, the
first candidate with the majority answer is returned. The text returned is the selected
candidate, unchanged (with its finish reason). Not streamed.

Options (request body, flat or under ``"optillm"``): ``genselect_n`` (int, 2-16, default 4),
``genselect_mode`` (``"batch"`` default, or ``"tournament"``), ``genselect_votes`` (int, 1-16,
default 3: selection samples per comparison), ``genselect_skip_unanimous`` (bool, default
true), ``answer_format`` (see ``answers.ANSWER_FORMATS``, default ``auto``),
``genselect_compare_temperature`` (float 0-2, default ``COMPARE_TEMPERATURE``: the comparison
calls'), ``genselect_include_reasoning`` (bool, default false: append the comparison reply
that picked the answer, after ``---``). Candidates are sampled at the client's ``temperature``
(default 0.7). OptiLLM's plugin names are aliases: ``num_candidates``, ``comparison_mode``,
``comparison_temperature``, ``include_reasoning``.

Metadata on the choice, ``optillm_votes``: ``mode``, ``candidates``, ``answers`` (per
candidate), ``chosen``, ``unanimous``, and the selection record: ``picks`` and ``votes``
(batch) or ``rounds`` (tournament: per round, its matches with ``pair``, ``picks``,
``winner`` and ``decided_by``), and ``fallback`` when no reply named a candidate.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..options import opt
from ..toolkit import answers
from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "genselect"

MODES = ("batch", "tournament")
CANDIDATE_TEMPERATURE = 0.7
COMPARE_TEMPERATURE = 0.6
#: Comparison replies are capped here when the client sets no ``max_tokens`` of its own.
COMPARE_MAX_TOKENS = 2048

SELECTOR_SYSTEM = ("You are an expert judge of solutions. You compare candidate solutions "
                   "carefully and choose the one most likely to be correct and complete.")


@dataclass(frozen=True)
class Options:
    genselect_n: int = opt(4, ge=2, le=16, aliases=("num_candidates",))
    genselect_mode: str = opt("batch", choices=MODES, aliases=("comparison_mode",))
    genselect_votes: int = opt(3, ge=1, le=16)
    genselect_skip_unanimous: bool = True
    answer_format: str = opt("auto", choices=answers.ANSWER_FORMATS)
    genselect_compare_temperature: float = opt(COMPARE_TEMPERATURE, ge=0, le=2,
                                               aliases=("comparison_temperature",))
    genselect_include_reasoning: bool = opt(False, aliases=("include_reasoning",))


def selection_prompt(query: str, candidates: list[str]) -> str:
    """The comparison prompt: the problem, the candidates numbered from 1, the reply format."""
    listing = "\n\n".join(f"Solution {i}:\n{c.strip()}" for i, c in enumerate(candidates, 1))
    return (f"Here is a problem and {len(candidates)} candidate solutions to it.\n\n"
            f"Problem:\n{query}\n\n{listing}\n\n"
            f"Compare the solutions: check each one's reasoning and final answer, and decide "
            f"which solution is the most likely to be correct. Explain briefly, then end your "
            f"reply with a line of the form \"Judgment: N\", where N is the number of the best "
            f"solution (1 to {len(candidates)}).")


_NUM = r"(?:solution|candidate|response|answer|option|number|no\.?|#)?[ \t]*#?[ \t]*(\d{1,3})\b"
_SELECTION_PATTERNS = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"judg(?:e)?ment[ \t*]*[:\uff1a]?[ \t*]*\[?[ \t]*" + _NUM,
    r"best[ \t]+(?:solution|candidate|response|choice|one)[ \t*]*(?:is|:)?[ \t*]*" + _NUM,
    r"\b(?:solution|candidate|response)[ \t]*#?[ \t]*(\d{1,3})[ \t*]+is[ \t]+(?:the[ \t]+)?"
    r"(?:best|most[ \t]+likely|correct|strongest)",
    r"\b(?:select|choose|pick|prefer|go[ \t]+with)[ \t]+(?:solution|candidate|response)"
    r"[ \t]*#?[ \t]*(\d{1,3})\b",
    r"\\boxed\{[ \t]*(\d{1,3})[ \t]*\}",
))
_ONLY_NUMBER = re.compile(r"[^\w]*(?:solution|candidate)?[ \t#]*(\d{1,3})[^\w]*", re.IGNORECASE)


def parse_selection(text: str | None, count: int) -> int | None:
    """The candidate a comparison reply selects, as a 0-based index (replies number them
    from 1), or None when it names none of ``1..count``.

    Tried in order, the last valid mention of each winning: "Judgment: N", "the best solution
    is N", "Solution N is the best", "I select solution N", ``\\boxed{N}``, then a reply that
    is only a number ("2", "Solution 2.").
    """
    if not text:
        return None
    for pattern in _SELECTION_PATTERNS:
        for match in reversed(pattern.findall(text)):
            if 1 <= int(match) <= count:
                return int(match) - 1
    only = _ONLY_NUMBER.fullmatch(text.strip())
    if only and 1 <= int(only.group(1)) <= count:
        return int(only.group(1)) - 1
    return None


def _compare(ctx: RunContext, candidates: list[str], votes: int,
             reasons: dict[int, str] | None = None) -> list[int | None]:
    """``votes`` selection samples over ``candidates`` (one call with ``n``): the picks.
    ``reasons`` gets, per picked candidate, the first reply that picked it."""
    messages = [Message("system", SELECTOR_SYSTEM),
                Message("user", selection_prompt(ctx.query, candidates))]
    params: dict[str, Any] = {"temperature": ctx.options.genselect_compare_temperature}
    if "max_tokens" not in ctx.sampling and "max_completion_tokens" not in ctx.sampling:
        params["max_tokens"] = COMPARE_MAX_TOKENS
    replies = ctx.sample(votes, messages, answer=False, **params)
    picks = [parse_selection(r, len(candidates)) for r in replies]
    if reasons is not None:
        for pick, reply in zip(picks, replies, strict=True):
            if pick is not None and pick not in reasons:
                reasons[pick] = reply
    return picks


def run(ctx: RunContext) -> Answer:
    options: Options = ctx.options
    n = options.genselect_n
    temperature = ctx.sampling.get("temperature", CANDIDATE_TEMPERATURE)
    choices = ctx.complete(n=n, answer=True, temperature=temperature).choices[:n]
    candidates = [c.text for c in choices]
    extracted = [answers.extract_answer(c, options.answer_format) for c in candidates]
    groups = list(answers.group_answers(extracted))
    # a candidate without an answer is a group of its own
    group_of = [g if g is not None else i for i, g in enumerate(groups)]
    record: dict[str, Any] = {"mode": options.genselect_mode, "candidates": len(candidates),
                              "answers": extracted, "unanimous": False}
    reasons: dict[int, str] = {}  # candidate -> the comparison reply that picked it
    if len(candidates) == 1 or (options.genselect_skip_unanimous and None not in groups
                                and len(set(groups)) == 1):
        chosen = 0
        record["unanimous"] = len(candidates) > 1
    elif options.genselect_mode == "batch":
        chosen = _batch(ctx, candidates, extracted, group_of, options.genselect_votes, record,
                        reasons)
    else:
        chosen = _tournament(ctx, candidates, group_of, options.genselect_votes, record,
                             reasons)
    record["chosen"] = chosen
    choice = choices[chosen]
    text = choice.text
    if options.genselect_include_reasoning and chosen in reasons:  # OptiLLM's layout
        text = f"{text}\n\n---\n**GenSelect Reasoning**: {reasons[chosen]}"
    return Answer(text, finish_reason=choice.finish_reason or "stop",
                  logprobs=choice.logprobs if ctx.params.get("logprobs") else None,
                  metadata={"optillm_votes": record})


def _batch(ctx: RunContext, candidates: list[str], extracted: list[str | None],
           group_of: list[int], votes: int, record: dict[str, Any],
           reasons: dict[int, str]) -> int:
    picks = _compare(ctx, candidates, votes, reasons)
    record["picks"] = picks
    valid = [p for p in picks if p is not None]
    if not valid:
        record["fallback"] = "majority"
        return max(answers.vote(extracted).index, 0)
    # the picks vote by the answer of the candidate they picked (paper: majority over the
    # selected answers); a candidate without an answer stands for itself
    result = answers.vote([str(group_of[p]) for p in valid], math_equivalence=False)
    record["votes"] = {_label(int(g), extracted): w for g, w in result.tally.items()}
    winners = Counter(p for p in valid if str(group_of[p]) == result.answer)
    return max(winners, key=lambda p: (winners[p], -valid.index(p)))


def _label(group: int, extracted: list[str | None]) -> str:
    return extracted[group] if extracted[group] is not None else f"solution {group + 1}"


def _tournament(ctx: RunContext, candidates: list[str], group_of: list[int], votes: int,
                record: dict[str, Any], reasons: dict[int, str]) -> int:
    support = Counter(group_of)
    alive = list(range(len(candidates)))
    rounds: list[list[dict[str, Any]]] = []

    def match(pair: tuple[int, int]) -> dict[str, Any]:
        a, b = pair
        if group_of[a] == group_of[b]:
            return {"pair": [a, b], "picks": [], "winner": a, "decided_by": "same_answer"}
        said: dict[int, str] = {}
        picks = [None if p is None else pair[p]
                 for p in _compare(ctx, [candidates[a], candidates[b]], votes, said)]
        for p, reply in said.items():
            reasons[pair[p]] = reply  # a later round's reply replaces an earlier one
        wins_a, wins_b = picks.count(a), picks.count(b)
        if wins_a != wins_b:
            return {"pair": [a, b], "picks": picks, "winner": a if wins_a > wins_b else b,
                    "decided_by": "judgment"}
        winner = b if support[group_of[b]] > support[group_of[a]] else a
        return {"pair": [a, b], "picks": picks, "winner": winner, "decided_by": "draw"}

    while len(alive) > 1:
        pairs = [(alive[i], alive[i + 1]) for i in range(0, len(alive) - 1, 2)]
        matches = ctx.map(match, pairs)  # a round's comparisons run concurrently
        rounds.append(matches)
        alive = [m["winner"] for m in matches] + ([alive[-1]] if len(alive) % 2 else [])
    record["rounds"] = rounds
    return alive[0]
