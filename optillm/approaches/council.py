"""Council: first opinions, anonymised peer ranking, a chairman's synthesis.

After karpathy/llm-council (as adapted by Composite LLM's ``CouncilStrategy``):

1. First opinions: every council member answers the conversation, concurrently. Members are
   ``council_models`` (default: the base model at ``council_temperatures``, by default
   0.3, 0.7 and 1.0).
2. Peer review: every member sees the answers as "Response A", "Response B", ... (never who
   wrote them), evaluates them and ends with a strict ``FINAL RANKING:`` numbered list; the
   reviews run concurrently. Rankings are parsed leniently (``parse_ranking``) and
   aggregated by average rank (``aggregate``); a review without a usable ranking is kept
   for the chairman but counts in no average.
3. Synthesis: the ``chairman_model`` (default: the base model) writes the final answer from
   the answers, the reviews and the aggregate ranking. It is the final call and streams when
   the chairman is the base model (a call to another model is made without streaming).

The choice carries ``council_metadata``: each member's model, temperature, answer and parsed
ranking, and the aggregate ranking (best first). Model names: ``council-<model>`` and
``council/<model>`` (``optillm.plan.model_names``). Calls: 2 x members + 1, three deep.

Options (request body): ``council_models`` (list of model names, 1-12), ``council_temperatures``
(list of numbers 0-2; one per member, or one for all), ``chairman_model`` (model name).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..toolkit.context import Answer, RunContext

SLUG = "council"
STREAMS = True

MAX_MEMBERS = 12
DEFAULT_TEMPERATURES = (0.3, 0.7, 1.0)
LABELS = string.ascii_uppercase


@dataclass(frozen=True)
class Options:
    council_models: list[str] | None = None
    council_temperatures: list[float] | None = None
    chairman_model: str | None = None

    def __post_init__(self):
        models, temps = self.council_models, self.council_temperatures
        if models is not None:
            if not 1 <= len(models) <= MAX_MEMBERS:
                raise ValueError(f"council_models must name 1 to {MAX_MEMBERS} models")
            if not all(isinstance(m, str) and m.strip() for m in models):
                raise ValueError("council_models must be non-empty model names")
            object.__setattr__(self, "council_models", tuple(models))
        if temps is not None:
            if not 1 <= len(temps) <= MAX_MEMBERS:
                raise ValueError(f"council_temperatures must have 1 to {MAX_MEMBERS} values")
            if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 2
                       for t in temps):
                raise ValueError("council_temperatures must be numbers between 0 and 2")
            object.__setattr__(self, "council_temperatures", tuple(float(t) for t in temps))
        if models is not None and temps is not None and 1 not in (len(models), len(temps)) \
                and len(models) != len(temps):
            raise ValueError("council_temperatures must have one value per council model, "
                             "or a single value for all")
        if self.chairman_model is not None and not (isinstance(self.chairman_model, str)
                                                    and self.chairman_model.strip()):
            raise ValueError("chairman_model must be a non-empty model name")


@dataclass(frozen=True)
class Member:
    """One seat of the council: ``label`` ("A", "B", ...), the model and its temperature
    (None: the client's)."""

    label: str
    model: str
    temperature: float | None


def members(ctx: RunContext) -> list[Member]:
    """The seats from the options; see the module docstring for the defaults."""
    opts = ctx.options
    models, temps = opts.council_models, opts.council_temperatures
    if models is None:
        temps = temps or DEFAULT_TEMPERATURES
        models = (ctx.model,) * len(temps)
    elif temps is None:
        temps = (ctx.sampling.get("temperature"),)
    if len(temps) == 1:
        temps = tuple(temps) * len(models)
    elif len(models) == 1:
        models = tuple(models) * len(temps)
    return [Member(LABELS[i], m, t) for i, (m, t) in enumerate(zip(models, temps, strict=True))]


# -- prompts ----------------------------------------------------------------------------------

def _responses(answers: Sequence[str]) -> str:
    return "\n\n".join(f"Response {LABELS[i]}:\n{a}" for i, a in enumerate(answers))


def review_prompt(query: str, answers: Sequence[str]) -> str:
    labels = [f"Response {LABELS[i]}" for i in range(len(answers))]
    example = "\n".join(f"{i}. {label}" for i, label in enumerate(reversed(labels), 1))
    return (f"You are reviewing different responses to this question:\n\n{query}\n\n"
            f"The responses, anonymised:\n\n{_responses(answers)}\n\n"
            f"First evaluate each response on its own: what it does well and what it gets "
            f"wrong. Then end your reply with your ranking from best to worst, in exactly this "
            f"format: the line \"FINAL RANKING:\" followed by one numbered line per response "
            f"and nothing after the list, for example:\n\nFINAL RANKING:\n{example}\n\n"
            f"Your evaluation and ranking:")


def synthesis_prompt(query: str, answers: Sequence[str], reviews: Sequence[str],
                     ranking: Sequence[dict[str, Any]]) -> str:
    order = ", ".join(f"Response {r['label']} ({r['average_rank']:.2f})" for r in ranking
                      if r["average_rank"] is not None) or "no usable ranking"
    review_text = "\n\n".join(f"Review {i}:\n{r}" for i, r in enumerate(reviews, 1))
    return (f"You are the chairman of a council of assistants. Each answered the question "
            f"below, then each reviewed and ranked all the answers anonymously.\n\n"
            f"Question: {query}\n\nThe answers:\n\n{_responses(answers)}\n\n"
            f"The reviews:\n\n{review_text or '(none)'}\n\n"
            f"Aggregate ranking, best first (average rank): {order}\n\n"
            f"Write the single best answer to the question: keep what the answers and "
            f"reviews show to be right, fix what is wrong. Answer the question directly; do "
            f"not mention the council, the responses or the reviews.\n\nFinal answer:")


# -- parsing and aggregation ------------------------------------------------------------------

_HEADER = re.compile(r"final\s+ranking\s*[:\-]?", re.IGNORECASE)
_NUMBERED = re.compile(r"^[\s>*_#-]*\(?\d+\s*[.):\]]\s*[*_\s]*(?:(?P<response>response)\s+[*_]*)?"
                       r"\(?(?P<label>[A-Za-z])\b", re.IGNORECASE | re.MULTILINE)
_MENTION = re.compile(r"\bresponse\s+([A-Z])\b", re.IGNORECASE)
_CHAIN = re.compile(r"^\s*([A-Z])((?:\s*(?:>|,|;|->|→)\s*[A-Z])+)\s*\.?\s*$", re.MULTILINE)


def _numbered(text: str, need_word: bool) -> list[str]:
    """Labels of numbered list lines: "1. Response c" (any case after the word "Response"),
    or, unless ``need_word``, "2) B" (a bare capital: "1. a good one" names nothing)."""
    out = []
    for m in _NUMBERED.finditer(text):
        label = m.group("label")
        if m.group("response") or (not need_word and label.isupper()):
            out.append(label.upper())
    return out


def parse_ranking(text: str, labels: Sequence[str]) -> list[str]:
    """The ranking (labels, best first) a review ends with; [] when it has none.

    Reads, after the last ``FINAL RANKING`` header (any case, bold or not): the numbered
    lines (``1. Response C``, ``2) B``), else ``Response X`` mentions in order, else a chain
    (``C > A > B``). Without a header only numbered lines naming "Response X" count (free
    text mentions responses in discussion order, not rank order). Labels outside ``labels``
    are dropped, repeats keep their first place.
    """
    text = text or ""
    valid = set(labels)
    headers = list(_HEADER.finditer(text))
    if headers:
        section = text[headers[-1].end():]
        found = [label for label in _numbered(section, need_word=False) if label in valid]
        if not found:
            found = [m.group(1).upper() for m in _MENTION.finditer(section)]
        if not found:
            chain = _CHAIN.search(section)
            if chain:
                found = re.findall(r"[A-Z]", chain.group(0))
    else:
        found = _numbered(text, need_word=True)
    ranking: list[str] = []
    for label in found:
        if label in valid and label not in ranking:
            ranking.append(label)
    return ranking


def aggregate(rankings: Sequence[Sequence[str]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Average rank (1 = best) of each label over the rankings that place it, best first;
    labels no ranking places come last with ``average_rank`` None."""
    positions: dict[str, list[int]] = {label: [] for label in labels}
    for ranking in rankings:
        for place, label in enumerate(ranking, 1):
            if label in positions:
                positions[label].append(place)
    rows = [{"label": label,
             "average_rank": round(sum(p) / len(p), 4) if p else None,
             "rankings_count": len(p)} for label, p in positions.items()]
    return sorted(rows, key=lambda r: (r["average_rank"] is None, r["average_rank"] or 0,
                                       labels.index(r["label"])))


# -- the run ---------------------------------------------------------------------------------

def run(ctx: RunContext) -> Answer:
    seats = members(ctx)
    labels = [s.label for s in seats]
    chairman = ctx.options.chairman_model or ctx.model

    def first_opinion(seat: Member) -> str:
        return ctx.complete(ctx.conversation(), model=seat.model, answer=True,
                            temperature=seat.temperature).text

    answers = ctx.map(first_opinion, seats)

    reviews: list[str] = []
    if len(seats) > 1:
        prompt = review_prompt(ctx.query, answers)

        def review(seat: Member) -> str:
            return ctx.complete(ctx.with_query(prompt), model=seat.model,
                                temperature=seat.temperature).text

        reviews = ctx.map(review, seats)
    rankings = [parse_ranking(r, labels) for r in reviews]
    ranking = aggregate(rankings, labels)
    seat_of = {s.label: s for s in seats}
    for row in ranking:
        row["model"] = seat_of[row["label"]].model
        row["temperature"] = seat_of[row["label"]].temperature

    final = ctx.complete(ctx.with_query(synthesis_prompt(ctx.query, answers, reviews, ranking)),
                         model=chairman, final=True)
    metadata = {
        "members": [{"label": s.label, "model": s.model, "temperature": s.temperature,
                     "answer": answers[i], "review": reviews[i] if reviews else None,
                     "ranking": rankings[i] if rankings else None}
                    for i, s in enumerate(seats)],
        "aggregate_ranking": ranking,
        "chairman_model": chairman,
    }
    finish = final.choices[0].finish_reason if final.choices else "stop"
    return Answer(final.text, finish_reason=finish or "stop",
                  metadata={"council_metadata": metadata})
