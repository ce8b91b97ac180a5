"""rStar: MCTS over reasoning steps with five human-like actions and a mutual-consistency check.

Qi et al., "Mutual Reasoning Makes Smaller LLMs Stronger Problem-Solvers", arXiv 2408.06195.
A node is a partial solution (the question, possibly rephrased, and the steps so far). The
actions, each one upstream call that makes one child:

- ``A1`` propose one next step;
- ``A2`` propose the remaining steps to the end (the child is terminal);
- ``A3`` propose the next sub-question and answer it;
- ``A4`` re-answer the last sub-question, step by step (only after ``A3``);
- ``A5`` rephrase the question, listing its conditions (only at the root).

A node at depth ``rstar_max_depth - 1`` may only finish (``A2``); a step that states a final
answer ("the answer is", ``\\boxed{}``, ``####``) ends its trajectory too. A rollout walks down
from the root: at a node with an untried action it claims the first (order A2, A1, A3, A4, A5)
and expands it; at a fully expanded node it follows the best UCT child
(``Q/N + rstar_c * sqrt(ln N_parent / N)``); it stops at a terminal node. Rollouts run in
concurrent batches of ``rstar_batch_size`` (``ctx.map``); the tree is changed only under a
lock, and the upstream calls run outside it. After each batch every rollout's terminal answer
(``optillm.toolkit.answers.extract_answer``) is rewarded with its share among all terminal answers
so
far (0 without an answer), backed up along its path.

Discriminator (mutual consistency): for every distinct terminal trajectory with an answer, the
later half is masked and the model completes the solution from the first half (one call each,
concurrently); a trajectory is consistent when the completion reaches an equivalent answer
(``optillm.toolkit.answers.equivalent``). The answer is the consistent trajectory with the best mean
reward; without a consistent one, the best of the majority answer's trajectories
(``optillm.toolkit.answers.vote``). The returned text is the whole trajectory (its steps and its
final
answer); ``reasoning`` labels each step with its action.

Calls, with R = rstar_num_rollouts, D = rstar_max_depth: at most ``R * D`` for the rollouts
(a rollout ends early at a terminal node) plus at most ``R`` for the discriminator (one per
distinct terminal trajectory). Critical path: at most ``ceil(R / rstar_batch_size) * D + 1``.

Sampling: actions and completions use the client's parameters (temperature default 0.8).

Budget: when the request's budget runs out the search stops (a rollout's next call is
refused); refused discriminator checks count as not consistent, and the answer is chosen from
what was found (``optillm_budget.stopped_early``
true in the metadata).

Options (request body): ``rstar_c`` (float, 0-10, default 1.4), ``rstar_max_depth`` (int,
1-8, default 3), ``rstar_num_rollouts`` (int, 1-32, default 5), ``rstar_batch_size`` (int,
1-8, default 4).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field

from ..options import opt
from ..toolkit.answers import equivalent, extract_answer, vote
from ..toolkit.context import Answer, BudgetExhausted, RunContext
from .mcts import guarded

SLUG = "rstar"

ACTION_NAMES = {"A1": "one step", "A2": "remaining steps", "A3": "sub-question",
                "A4": "re-answer", "A5": "rephrase"}
ORDER = ("A2", "A1", "A3", "A4", "A5")
FINISH = "End with the sentence 'The answer is X.', where X is the final answer."
INSTRUCTIONS = {
    "A1": "Write only the next single step of the solution, in one or two sentences.",
    "A2": f"Write the remaining steps of the solution, up to the final answer. {FINISH}",
    "A3": ("Ask the next sub-question that helps to solve the problem, then answer it, in "
           "the form 'Sub-question: ...' then 'Answer: ...'."),
    "A4": ("Answer this sub-question again, carefully and step by step, in the form "
           "'Sub-question: ...' then 'Answer: ...':\n{sub_question}"),
    "A5": ("Rephrase the problem so that every given condition is listed clearly. Write "
           "only the rephrased problem, do not solve it."),
}
_STATES_ANSWER = re.compile(r"\\boxed\{|####|\bthe\s+(?:final\s+)?answer\s+is\b", re.IGNORECASE)


@dataclass(frozen=True)
class Options:
    rstar_c: float = opt(1.4, ge=0, le=10)
    rstar_max_depth: int = opt(3, ge=1, le=8)
    rstar_num_rollouts: int = opt(5, ge=1, le=32)
    rstar_batch_size: int = opt(4, ge=1, le=8)


@dataclass(frozen=True)
class Step:
    action: str
    text: str


@dataclass(eq=False)
class Node:
    """A partial solution. ``value`` sums the rewards backed up over ``visits``; ``tried``
    holds the actions claimed (by any rollout) at this node."""

    question: str
    steps: tuple[Step, ...] = ()
    parent: Node | None = None
    terminal: bool = False
    answer: str | None = None
    children: list[Node] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    visits: int = 0
    value: float = 0.0

    @property
    def mean(self) -> float:
        return self.value / self.visits if self.visits else 0.0

    def uct(self, c: float) -> float:
        if self.visits == 0:
            return math.inf
        parent = self.parent.visits if self.parent else self.visits
        return self.mean + c * math.sqrt(math.log(max(parent, 1)) / self.visits)


def applicable(node: Node, max_depth: int) -> list[str]:
    """The actions allowed at ``node``, in the order rollouts try them."""
    if node.terminal:
        return []
    if len(node.steps) >= max_depth - 1:
        return ["A2"]
    allowed = {"A1", "A2", "A3"}
    if node.steps and node.steps[-1].action == "A3":
        allowed.add("A4")
    if node.parent is None:
        allowed.add("A5")
    return [a for a in ORDER if a in allowed]


def solution_text(steps: tuple[Step, ...]) -> str:
    """The steps of a solution (rephrasings left out), one paragraph each."""
    return "\n\n".join(s.text for s in steps if s.action != "A5")


def action_prompt(node: Node, action: str) -> str:
    so_far = solution_text(node.steps)
    sub_question = next((s.text for s in reversed(node.steps) if s.action == "A3"), "")
    instruction = INSTRUCTIONS[action].format(sub_question=sub_question)
    return (f"Problem: {node.question}\n\n"
            + (f"Solution so far:\n{so_far}\n\n" if so_far else "")
            + instruction)


def expand(ctx: RunContext, node: Node, action: str) -> Node:
    """The child ``action`` makes from ``node`` (one call)."""
    text = ctx.complete(ctx.with_query(action_prompt(node, action)),
                        temperature=ctx.sampling.get("temperature", 0.8)).text.strip()
    step = Step(action, text)
    if action == "A5":
        return Node(text or node.question, node.steps + (step,), node)
    steps = node.steps + (step,)
    terminal = action == "A2" or bool(_STATES_ANSWER.search(text))
    answer = extract_answer(solution_text(steps)) if terminal else None
    return Node(node.question, steps, node, terminal=terminal, answer=answer)


def masked_prefix(text: str) -> str:
    """The first half of a solution: half its lines, or half its words if it has one line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) >= 2:
        return "\n".join(lines[:len(lines) // 2])
    words = text.split()
    return " ".join(words[:len(words) // 2])


def completion_prompt(question: str, prefix: str) -> str:
    start = prefix or "(nothing yet)"
    return (f"Problem: {question}\n\nHere is the beginning of a solution:\n{start}\n\n"
            f"Continue this solution from where it stops, to the end. {FINISH}")


class Search:
    """One request's tree and the rollouts over it (see the module docstring)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.opts = ctx.options
        self.root = Node(ctx.query)
        self.lock = threading.Lock()
        self.terminals: list[Node] = []  # in creation order

    def rollout(self, _: int) -> list[Node]:
        """One walk from the root to a terminal node (or a dead end); the path."""
        node, path = self.root, [self.root]
        while True:
            with self.lock:
                if node.terminal:
                    return path
                untried = [a for a in applicable(node, self.opts.rstar_max_depth)
                           if a not in node.tried]
                if not untried:
                    if not node.children:  # all claimed by rollouts still running
                        return path
                    node = max(node.children, key=lambda c: c.uct(self.opts.rstar_c))
                    path.append(node)
                    continue
                action = untried[0]
                node.tried.add(action)
            child = expand(self.ctx, node, action)  # outside the lock: the slow part
            with self.lock:
                node.children.append(child)
                if child.terminal:
                    self.terminals.append(child)
            node = child
            path.append(node)

    def backup(self, paths: list[list[Node]]) -> None:
        with self.lock:
            answers = [t.answer for t in self.terminals]
            groups = vote(answers).groups if answers else ()
            share = {}
            for i, t in enumerate(self.terminals):
                if groups[i] is not None:
                    share[id(t)] = groups.count(groups[i]) / len(answers)
            for path in paths:
                reward = share.get(id(path[-1]), 0.0) if path[-1].terminal else 0.0
                for node in path:
                    node.visits += 1
                    node.value += reward

    def search(self) -> int:
        """Run the rollouts in batches; returns how many finished."""
        done = 0
        total, batch = self.opts.rstar_num_rollouts, self.opts.rstar_batch_size
        while done < total:
            size = min(batch, total - done)
            results = self.ctx.map(guarded(self.rollout), range(done, done + size))
            paths = [p for p in results if p is not None]
            self.backup(paths)
            done += len(paths)
            if len(paths) < size:  # a rollout met the spent budget
                break
        return done

    def discriminate(self, candidates: list[Node]) -> list[bool | None]:
        """Per candidate: does the model, given the first half, reach the same answer?
        None where the budget stopped the check."""
        def check(node: Node) -> bool:
            prefix = masked_prefix(solution_text(node.steps))
            reply = self.ctx.complete(
                self.ctx.with_query(completion_prompt(node.question, prefix)),
                temperature=self.ctx.sampling.get("temperature", 0.8)).text
            # the completion alone must reach the answer: a masked prefix may already hold
            # a sub-question's answer, which a garbage completion must not inherit
            completed = extract_answer(reply)
            return completed is not None and equivalent(completed, node.answer)

        return self.ctx.map(guarded(check), candidates)


def choose(candidates: list[Node], consistent: list[bool | None]) -> tuple[int, str]:
    """Index of the chosen candidate and how it was chosen."""
    best = lambda idx: max(idx, key=lambda i: (candidates[i].mean, -i))  # noqa: E731
    agreed = [i for i, ok in enumerate(consistent) if ok]
    if agreed:
        return best(agreed), "mutual_consistency"
    result = vote([c.answer for c in candidates])
    return best(list(result.members)), "majority"


def fallback(search: Search, terminals: list[Node]) -> Node:
    """Without an answered trajectory: the first terminal one, else the deepest partial one."""
    if terminals:
        return terminals[0]
    stack, deepest = [search.root], search.root
    while stack:
        node = stack.pop()
        if len(node.steps) > len(deepest.steps):
            deepest = node
        stack.extend(node.children)
    if deepest is search.root:
        raise BudgetExhausted("rstar spent the request's budget before any reasoning step")
    return deepest


def answer_text(node: Node) -> str:
    text = solution_text(node.steps)
    if node.answer is not None and not _STATES_ANSWER.search(text):
        text = f"{text}\n\nThe answer is {node.answer}."
    return text.strip()


def reasoning_text(node: Node) -> str:
    return "\n\n".join(f"Step {i} ({s.action}, {ACTION_NAMES[s.action]}): {s.text}"
                       for i, s in enumerate(node.steps, 1))


def run(ctx: RunContext) -> Answer:
    search = Search(ctx)
    try:
        rollouts = search.search()
    except BudgetExhausted:  # raised outside a rollout (cannot normally happen)
        rollouts = 0
    # in tree order (by the actions taken), not in the order concurrent rollouts finished,
    # so that ties are broken the same way however the threads ran
    terminals = sorted(search.terminals, key=lambda t: [ORDER.index(s.action) for s in t.steps])
    candidates = [t for t in terminals if t.answer is not None]
    record: dict = {"rollouts": rollouts, "terminals": len(search.terminals),
                    "candidates": len(candidates)}
    if candidates:
        consistent = search.discriminate(candidates)
        index, method = choose(candidates, consistent)
        chosen = candidates[index]
        record.update(consistent=consistent, chosen=index, method=method,
                      answers=[c.answer for c in candidates],
                      scores=[round(c.mean, 4) for c in candidates])
    else:
        chosen = fallback(search, terminals)
        record.update(method="fallback")
    record["actions"] = [s.action for s in chosen.steps]
    record["answer"] = chosen.answer
    return Answer(answer_text(chosen), reasoning=reasoning_text(chosen),
                  metadata={"optillm_rstar": record, **ctx.budget_metadata()})
