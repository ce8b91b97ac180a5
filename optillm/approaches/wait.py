"""Wait: N more rounds of "wait, check your reasoning" after the first answer (TTC-LLM).

After TTC-LLM's ``<model>-wait-N`` proxy (N at most 20). Two modes:

- ``chat`` (default): one answer, then N rounds, each appending the last answer as an
  assistant turn and the user turn ``"wait, check your reasoning"``; the last round's answer
  is the final one (``final=True``: it streams).
- ``continue``: s1's budget forcing (Muennighoff et al., "s1: Simple test-time scaling",
  arXiv 2501.19393). The chat is rendered as a raw prompt with the model's chat template
  (``Upstream.apply_template``: llama-server's ``POST /apply-template``) and generated as a
  text completion; where the model stopped, ``"Wait"`` is appended to the same trace and
  the generation continues, N times (after a blank line unless the model ended on
  whitespace); each continued segment, the final one too, begins with that "Wait". Needs an
  upstream with text completions and template rendering; others get a 400
  ``CapabilityError`` before any tokens are spent. Not streamed (sent whole when ready).

The content is always::

    <test-time-compute>
    {earlier answers (segments), separated by blank lines}
    </test-time-compute>

    {the final answer}

Usage is the sum over all N+1 calls. Model-name form: ``<model>-wait-N``
(``optillm.plan.model_names``), e.g. ``qwen-wait-6`` -> ``wait`` on ``qwen`` with
``wait_rounds=6``; a body ``wait_rounds`` overrides N, and the prefix form ``wait-qwen``
takes it from the body.

Options (request body): ``wait_rounds`` (int, 1-20, default 3), ``wait_mode`` (``"chat"`` or
``"continue"``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CapabilityError
from ..options import opt
from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "wait"
STREAMS = True

MAX_ROUNDS = 20
WAIT_PROMPT = "wait, check your reasoning"
#: What s1's budget forcing appends to the trace where the model stopped.
WAIT_WORD = "Wait"
OPEN_TAG, CLOSE_TAG = "<test-time-compute>", "</test-time-compute>"
MODES = ("chat", "continue")


@dataclass(frozen=True)
class Options:
    wait_rounds: int = opt(3, ge=1, le=MAX_ROUNDS)
    wait_mode: str = opt("chat", choices=MODES)


def render(earlier: list[str], final: str) -> str:
    """The content: the earlier answers inside the tags, a blank line, the final answer."""
    return f"{OPEN_TAG}\n" + "\n\n".join(earlier) + f"\n{CLOSE_TAG}\n\n" + final


def run(ctx: RunContext) -> Answer:
    if ctx.options.wait_mode == "continue":
        return run_continue(ctx)
    return run_chat(ctx)


def run_chat(ctx: RunContext) -> Answer:
    """The chat transcript: answer, then (assistant answer, user "wait ...") N times."""
    rounds = ctx.options.wait_rounds
    messages = ctx.conversation()
    answers = [ctx.complete(messages, answer=True).text]
    for i in range(1, rounds + 1):
        messages += [Message("assistant", answers[-1]), Message("user", WAIT_PROMPT)]
        last = i == rounds
        if last:
            ctx.emit(render(answers, ""))
        completion = ctx.complete(messages, answer=True, final=last)
        answers.append(completion.text)
    finish = completion.choices[0].finish_reason if completion.choices else "stop"
    return Answer(render(answers[:-1], answers[-1]), finish_reason=finish or "stop")


def run_continue(ctx: RunContext) -> Answer:
    """s1 budget forcing on one text trace: generate; then N times append "Wait" where the
    model stopped and continue the same trace."""
    try:
        trace = ctx.apply_template()
    except CapabilityError as exc:
        raise CapabilityError(f"wait_mode 'continue' needs an upstream that renders chat "
                              f"templates and serves text completions: {exc.message}",
                              param="wait_mode") from exc
    segments: list[str] = []
    completion = None
    for i in range(ctx.options.wait_rounds + 1):
        forced = ""
        if i:
            separator = "" if trace[-1:].isspace() else "\n\n"
            forced = WAIT_WORD
            trace += separator + forced
        try:
            completion = ctx.complete_text(trace)
        except CapabilityError as exc:
            raise CapabilityError(f"wait_mode 'continue' needs an upstream that serves text "
                                  f"completions: {exc.message}", param="wait_mode") from exc
        trace += completion.text
        segments.append(forced + completion.text)
    finish = completion.choices[0].finish_reason if completion and completion.choices else None
    return Answer(render(segments[:-1], segments[-1]), finish_reason=finish or "stop")
