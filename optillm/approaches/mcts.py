"""Monte Carlo tree search over dialogue states.

After Xie et al., "Monte Carlo Tree Search Boosts Reasoning via Iterative Preference
Learning", arXiv 2405.00451, in OptiLLM's dialogue form. A node is a conversation state (the
client's messages, then assistant replies and simulated user follow-ups); an action is one
assistant reply. Per simulation:

1. select: from the root, follow the child with the best UCT score
   (``mean value + mcts_exploration * sqrt(ln N_parent / N_child)``, unvisited children first)
   down to a node without children;
2. expand: a non-root leaf first gets a simulated user follow-up (one call), so its state ends
   with a user turn; then ``mcts_expansions`` replies are sampled in one call with ``n``;
3. simulate and evaluate, for every new child concurrently (``ctx.map``): ``mcts_depth - 1``
   further exchanges (a simulated user follow-up and an assistant reply, two calls each), then
   one LLM-judged value of the resulting state (a 0-10 score parsed tolerantly, see
   ``parse_score``; an unreadable score counts as the neutral 0.5);
4. back up: every evaluated child adds its value and a visit to itself and its ancestors.

The answer is the reply of the root's most visited child (ties: the higher mean value, then
the first sampled).

Calls, with S = mcts_simulations, k = mcts_expansions, d = mcts_depth:
``S * (1 + k * (2d - 1)) + (S - 1)`` (the ``S - 1`` user follow-ups of expanded non-root
leaves), e.g. 9 with the defaults. Critical path: ``2d`` calls for the first simulation and
``2d + 1`` for each later one.

Sampling: replies use the client's parameters (temperature default 1.0 for diversity); the
simulated user turns use temperature 0.7 and the judge temperature 0.1 with ``max_tokens`` 16.

Budget: when the request's budget (``max_total_tokens`` / ``max_upstream_calls``) runs out,
the search stops and answers with the best root child so far; the choice's metadata then has
``optillm_budget.stopped_early`` true.

Options (request body): ``mcts_simulations`` (int, 1-32, default 2), ``mcts_exploration``
(float, 0-10, default 0.2), ``mcts_depth`` (int, 1-5, default 1), ``mcts_expansions``
(int, 1-8, default 3).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..options import opt
from ..toolkit.context import Answer, BudgetExhausted, RunContext
from ..types import Message

SLUG = "mcts"

T = TypeVar("T")
R = TypeVar("R")

NEUTRAL_VALUE = 0.5

JUDGE_PROMPT = ("Rate how well the assistant's replies in the conversation above answer the "
                "user's requests: correct, relevant, clear and helpful. Reply with only a "
                "number from 0 (useless) to 10 (excellent).")
FOLLOW_UP_PROMPT = ("Play the user of the conversation above. Write the user's next short "
                    "message: a natural follow-up question or request about the assistant's "
                    "last reply. Write only the message.")


@dataclass(frozen=True)
class Options:
    mcts_simulations: int = opt(2, ge=1, le=32)
    mcts_exploration: float = opt(0.2, ge=0, le=10)
    mcts_depth: int = opt(1, ge=1, le=5)
    mcts_expansions: int = opt(3, ge=1, le=8)


# -- tolerant parsing -------------------------------------------------------------------------

_SCORE = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:(/|out\s+of)\s*(\d+(?:\.\d+)?)|(%))?",
                    re.IGNORECASE)


def parse_score(text: str | None, scale: float = 10.0) -> float | None:
    """The first score in a judge's reply as a value in [0, 1]; None when there is none.

    ``"7"`` -> 0.7 (read on ``scale``), ``"8/10"`` / ``"4 out of 5"`` -> the fraction,
    ``"85%"`` -> 0.85, ``"0.6"`` (a fraction below 1) -> 0.6; values are clamped to [0, 1].
    Garbage (``"banana"``, empty text) gives None.
    """
    match = _SCORE.search(text or "")
    if not match:
        return None
    value = float(match.group(1))
    if match.group(3) is not None:
        denominator = float(match.group(3))
        value = value / denominator if denominator > 0 else 0.0
    elif match.group(4):
        value = value / 100
    elif not (0 < value < 1):  # "0.6" is already a fraction; "6" is on the scale
        value = value / scale
    return max(0.0, min(1.0, value))


# -- helpers shared with rstar and pvg ---------------------------------------------------------

def guarded(fn: Callable[[T], R]) -> Callable[[T], R | None]:
    """``fn`` returning None instead of raising ``BudgetExhausted``, so one call that meets
    the spent budget inside ``ctx.map`` does not discard its siblings' results."""
    def call(item: T) -> R | None:
        try:
            return fn(item)
        except BudgetExhausted:
            return None
    return call


# -- the tree ---------------------------------------------------------------------------------

@dataclass(eq=False)
class Node:
    """A dialogue state. ``messages`` ends with the ``reply`` that led here (none at the
    root); ``value`` is the sum of backed-up values over ``visits``."""

    messages: tuple[Message, ...]
    reply: str | None = None
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0

    @property
    def mean(self) -> float:
        return self.value / self.visits if self.visits else 0.0

    def uct(self, exploration: float) -> float:
        if self.visits == 0:
            return math.inf
        parent_visits = self.parent.visits if self.parent else self.visits
        return self.mean + exploration * math.sqrt(math.log(max(parent_visits, 1))
                                                   / self.visits)

    def backup(self, value: float) -> None:
        node: Node | None = self
        while node is not None:
            node.visits += 1
            node.value += value
            node = node.parent


def select(root: Node, exploration: float) -> Node:
    """The leaf reached by following the best UCT child (the first of equal scores)."""
    node = root
    while node.children:
        node = max(node.children, key=lambda c: c.uct(exploration))
    return node


def best_child(root: Node) -> Node:
    """Most visited, then highest mean value, then first sampled."""
    return max(root.children, key=lambda c: (c.visits, c.mean, -root.children.index(c)))


# -- the calls --------------------------------------------------------------------------------

def follow_up(ctx: RunContext, messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """``messages`` plus a simulated user turn (one call)."""
    text = ctx.complete(list(messages) + [Message("user", FOLLOW_UP_PROMPT)],
                        temperature=0.7).text.strip()
    return messages + (Message("user", text or "Please go on."),)


def reply_temperature(ctx: RunContext) -> float:
    return ctx.sampling.get("temperature", 1.0)


def evaluate(ctx: RunContext, messages: tuple[Message, ...]) -> tuple[float, bool]:
    """The judged value of a state in [0, 1] and whether the judge's reply was readable."""
    reply = ctx.complete(list(messages) + [Message("user", JUDGE_PROMPT)],
                         temperature=0.1, max_tokens=16).text
    score = parse_score(reply)
    return (NEUTRAL_VALUE, False) if score is None else (score, True)


def rollout_and_evaluate(ctx: RunContext, child: Node, depth: int) -> tuple[float, bool]:
    """``depth - 1`` simulated exchanges after ``child``'s reply, then the judged value."""
    messages = child.messages
    for _ in range(depth - 1):
        messages = follow_up(ctx, messages)
        text = ctx.complete(list(messages), temperature=reply_temperature(ctx)).text
        messages = messages + (Message("assistant", text),)
    return evaluate(ctx, messages)


def run(ctx: RunContext) -> Answer:
    opts = ctx.options
    root = Node(tuple(ctx.messages))
    simulations = unreadable = 0
    try:
        for _ in range(opts.mcts_simulations):
            leaf = select(root, opts.mcts_exploration)
            state = leaf.messages if leaf is root else follow_up(ctx, leaf.messages)
            replies = ctx.sample(opts.mcts_expansions, list(state), answer=leaf is root,
                                 temperature=reply_temperature(ctx))
            children = [Node(state + (Message("assistant", r),), r, leaf) for r in replies]
            leaf.children.extend(children)
            results = ctx.map(guarded(lambda c: rollout_and_evaluate(ctx, c, opts.mcts_depth)),
                              children)
            for child, result in zip(children, results, strict=True):
                if result is not None:
                    child.backup(result[0])
                    unreadable += not result[1]
            simulations += 1
            if any(r is None for r in results):
                break  # the budget ran out during the evaluations
    except BudgetExhausted:
        if not root.children:
            raise  # nothing to answer with
    chosen = best_child(root)
    record = {"simulations": simulations,
              "unreadable_scores": unreadable,
              "chosen": root.children.index(chosen),
              "root_children": [{"visits": c.visits, "value": round(c.mean, 4)}
                                for c in root.children]}
    return Answer(chosen.reply or "", metadata={"optillm_mcts": record,
                                                **ctx.budget_metadata()})
