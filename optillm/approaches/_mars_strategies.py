"""``mars``'s strategy network and answer shaping: prompts, tolerant parsing, thinking tags.

Package-private (the loader registers no approach from a ``_`` module). After OptiLLM's
``mars/strategy_network.py`` and ``mars/answer_extraction.py`` (codelion/optillm 0.4.0), read
for behaviour only:

- ``strategy_prompt`` asks an agent to describe the reasoning strategy of one solution in four
  labelled lines; ``parse_strategy`` reads them back tolerantly (markdown, numbering, other
  case) and gives None when none is there, so a malformed reply shares nothing.
- ``peer_strategies`` picks, for one population member, up to ``SHARED`` strategies of *other*
  agents; ``enhance_prompt`` asks the member's agent to strengthen its solution with them.
- ``extract_final`` and ``with_thinking_tags``: ``<think>\\n{synthesis}\\n</think>\\n\\n{answer}``
  where the answer is the last code block (``code``), the last ``\\boxed{}`` (``math``), the
  last paragraph, or all of it (``none``); ``auto`` picks code, then math, then a paragraph.
- ``effort``: the ``reasoning_effort`` each phase asks for with ``use_reasoning_api``
  (OptiLLM's: agents low/medium/high by temperature, checks low, strategies medium, the rest
  high).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..toolkit.answers import last_boxed, last_code_block

#: Peer strategies shown to one member (OptiLLM shows two).
SHARED = 2
#: A field's text is cut to this many characters in prompts.
FIELD_CHARS = 300
THINK_OPEN = "<think>\n"

_FIELDS = {"approach": "approach", "key_insights": "insights", "insights": "insights",
           "techniques": "techniques", "mathematical_techniques": "techniques",
           "pattern": "pattern", "solution_pattern": "pattern"}
_LINE = re.compile(r"^[\s>*#\-\d.)]*\**\s*([A-Za-z][A-Za-z _]*?)\s*\**\s*[:\-]\s*\**\s*(.+)$")


@dataclass(frozen=True)
class Strategy:
    """The reasoning strategy read from population member ``member`` (agent ``agent``)."""

    member: int
    agent: int
    approach: str = ""
    insights: str = ""
    techniques: str = ""
    pattern: str = ""

    def render(self) -> str:
        parts = [(label, getattr(self, name)) for label, name in (
            ("Approach", "approach"), ("Key insights", "insights"),
            ("Techniques", "techniques"), ("Pattern", "pattern"))]
        return "\n".join(f"- {label}: {_cut(text)}" for label, text in parts if text)

    def to_dict(self) -> dict:
        return {"member": self.member, "agent": self.agent, "approach": self.approach,
                "insights": self.insights, "techniques": self.techniques,
                "pattern": self.pattern}


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= FIELD_CHARS else text[:FIELD_CHARS - 3] + "..."


def strategy_prompt(query: str, solution: str) -> str:
    return (f"Problem:\n{query}\n\nA solver's solution:\n{solution}\n\nDescribe the reasoning "
            f"strategy this solution uses, so that another solver could reuse it. Answer in "
            f"exactly four lines:\nAPPROACH: <the main method>\nKEY_INSIGHTS: <the 2-3 ideas "
            f"that made it work>\nTECHNIQUES: <specific techniques used>\nPATTERN: <the "
            f"general template of the solution>")


def parse_strategy(text: str | None, member: int, agent: int) -> Strategy | None:
    """The labelled fields of ``strategy_prompt``'s reply, or None when there are none."""
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        key = "_".join(m.group(1).lower().split())
        name = _FIELDS.get(key)
        value = m.group(2).strip().strip("*").strip()
        if name and value and name not in found:
            found[name] = value
    return Strategy(member, agent, **found) if found else None


def peer_strategies(member: int, agent: int, strategies: list[Strategy],
                    population: int) -> list[Strategy]:
    """Up to ``SHARED`` strategies of other agents, one per agent, the members after
    ``member`` first (cyclically over a population of ``population``)."""
    ordered = sorted(strategies, key=lambda s: (s.member - member) % population)
    picked: list[Strategy] = []
    for s in ordered:
        if s.agent != agent and all(p.agent != s.agent for p in picked):
            picked.append(s)
        if len(picked) == SHARED:
            break
    return picked


def render_peers(peers: list[Strategy]) -> str:
    return "\n\n".join(f"Strategy of agent {s.agent}:\n{s.render()}" for s in peers)


def enhance_prompt(query: str, agent: int, solution: str, peers: list[Strategy]) -> str:
    return (f"{query}\n\nYou are agent {agent}. Your current solution:\n{solution}\n\n"
            f"Reasoning strategies other solvers used on this problem:\n\n"
            f"{render_peers(peers)}\n\nStrengthen your solution with whatever in these "
            f"strategies is valuable (a better method, a missed case, a check), keeping what is "
            f"right in yours. Write the complete improved solution, ending with the final "
            f"answer.")


# -- the answer ------------------------------------------------------------------------------

_STATED = re.compile(r"(?:final answer|the answer is)\s*[:\-]?\s*(.+)", re.IGNORECASE)


def extract_final(text: str, mode: str) -> str:
    """The clean final answer of ``text`` under ``mode`` (see the module docstring); the whole
    text when nothing fits."""
    text = text or ""
    if mode == "none" or not text.strip():
        return text
    if mode == "auto":
        mode = "code" if "```" in text else "math" if "\\boxed" in text else "generic"
    if mode == "code":
        block = last_code_block(text)
        if block and block.strip():
            return f"```\n{block.strip()}\n```"
    if mode == "math":
        boxed = last_boxed(text)
        if boxed:
            return f"The final answer is $\\boxed{{{boxed}}}$"
        stated = _STATED.findall(text)
        if stated:
            return stated[-1].strip()
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return paragraphs[-1] if paragraphs else text


def with_thinking_tags(synthesis: str, mode: str) -> str:
    """``<think>\\n{synthesis}\\n</think>\\n\\n{extract_final(synthesis, mode)}``."""
    return f"{THINK_OPEN}{synthesis}\n</think>\n\n{extract_final(synthesis, mode)}"


def effort(phase: str, temperature: float = 0.0) -> str:
    """The ``reasoning_effort`` of a phase: ``agent`` by temperature (<= 0.4 low, <= 0.8
    medium, else high), ``verify`` low, ``strategy`` medium, any other high."""
    if phase == "agent":
        return "low" if temperature <= 0.4 else "medium" if temperature <= 0.8 else "high"
    return {"verify": "low", "strategy": "medium"}.get(phase, "high")
