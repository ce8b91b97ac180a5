"""Majority voting: k samples, each one's final answer extracted, the most common answer wins.

The "maj@k" baseline of test-time scaling (the voting half of Wang et al., "Self-Consistency
Improves Chain of Thought Reasoning in Language Models", arXiv 2203.11171), as OptiLLM's
``majority_voting`` plugin. The k samples come from one call with ``n=k`` (the upstream stack
emulates ``n`` with concurrent calls where the upstream lacks it), so the wall time is one call
deep. Answers are extracted and voted on by ``optillm.toolkit.answers``: equivalent answers
(``1/2``,
``0.5``, ``\\frac{1}{2}``) count as one where math-verify is installed. The text returned is
the first sample that reached the winning answer, unchanged (with its finish reason); when no
sample states an answer, the first sample. Not streamed: the answer exists once all samples do.

Options (request body, flat or under ``"optillm"``):

- ``majority_voting_k`` (int, 1-64, default 6): samples; OptiLLM's ``k`` is accepted too
  (``majority_voting_k`` wins when both are given).
- ``majority_voting_weighting`` (``"count"`` default, or ``"confidence"``): with
  ``confidence`` each sample weighs its mean token probability
  (``answers.confidence_weight``); the sampling call then asks for logprobs, and an upstream
  that returns none gives a 400.
- ``answer_format`` (``auto`` default, ``boxed``, ``number``, ``choice``, ``code``, ``text``):
  how answers are extracted (``answers.extract_answer``).

The samples' temperature is the client's ``temperature`` (default 0.6, OptiLLM's).

Metadata on the choice, ``optillm_votes``: ``k``, ``weighting``, ``answers`` (per sample),
``weights`` (per sample, ``confidence`` only), ``votes`` (weight per distinct answer),
``winner`` (the winning answer or None), ``chosen`` (the sample returned), ``agreement`` (the
winner's share of all weight), ``equivalence`` (``"math"`` with math-verify, else ``"string"``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CapabilityError
from ..options import opt
from ..toolkit import answers
from ..toolkit.context import Answer, RunContext

SLUG = "majority_voting"

DEFAULT_K = 6
DEFAULT_TEMPERATURE = 0.6


@dataclass(frozen=True)
class Options:
    majority_voting_k: int | None = opt(None, ge=1, le=64)
    k: int | None = opt(None, ge=1, le=64)
    majority_voting_weighting: str = opt("count", choices=answers.WEIGHTINGS)
    answer_format: str = opt("auto", choices=answers.ANSWER_FORMATS)

    @property
    def samples(self) -> int:
        for value in (self.majority_voting_k, self.k):
            if value is not None:
                return value
        return DEFAULT_K


def run(ctx: RunContext) -> Answer:
    options: Options = ctx.options
    k = options.samples
    weighting = options.majority_voting_weighting
    params = {"temperature": ctx.sampling.get("temperature", DEFAULT_TEMPERATURE)}
    if weighting == "confidence":
        params["logprobs"] = True
    choices = ctx.complete(n=k, answer=True, **params).choices[:k]
    texts = [c.text for c in choices]
    extracted = [answers.extract_answer(t, options.answer_format) for t in texts]
    weights = None
    if weighting == "confidence":
        if not all((c.logprobs or {}).get("content") for c in choices if c.text):
            raise CapabilityError("majority_voting_weighting 'confidence' needs token "
                                  "logprobs, and the upstream returned none",
                                  param="majority_voting_weighting")
        weights = [answers.confidence_weight(c.logprobs) for c in choices]
    result = answers.vote(extracted, weights)
    chosen = max(result.index, 0)
    record = {"k": k, "weighting": weighting, "answers": extracted,
              "votes": result.tally, "winner": result.answer, "chosen": chosen,
              "agreement": result.share,
              "equivalence": "math" if answers.math_verify_available() else "string"}
    if weights is not None:
        record["weights"] = weights
    choice = choices[chosen]
    return Answer(choice.text, finish_reason=choice.finish_reason or "stop",
                  logprobs=choice.logprobs if ctx.params.get("logprobs") else None,
                  metadata={"optillm_votes": record})
