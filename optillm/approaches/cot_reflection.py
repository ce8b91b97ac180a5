"""Chain-of-thought with reflection: think, reflect, then give the answer in ``<output>`` tags.

After OptiLLM's ``cot_reflection`` (a prompt in the style of "Reflection-Tuning", Li et al.,
arXiv 2310.11716). One upstream call. The client sees only the ``<output>`` part; with
``return_full_response`` it sees the thinking and reflection too. Not streamed: the answer is
cut out of the whole reply.
"""

from __future__ import annotations

import re

from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "cot_reflection"

INSTRUCTIONS = """You are an AI assistant that uses a Chain of Thought (CoT) approach with \
reflection to answer queries. Follow these steps:

1. Think through the problem step by step within the <thinking> tags.
2. Reflect on your thinking to check for any errors or improvements within the <reflection> tags.
3. Make any necessary adjustments based on your reflection.
4. Provide your final, concise answer within the <output> tags.

Important: The <thinking> and <reflection> sections are for your internal reasoning process \
only. Do not include any part of the final answer in these sections. The actual response to \
the query must be entirely contained within the <output> tags.

Use the following format for your response:
<thinking>
[Your step-by-step reasoning goes here. This is your internal thought process, not the final \
answer.]
<reflection>
[Your reflection on your reasoning, checking for errors or improvements]
</reflection>
[Any adjustments to your thinking based on your reflection]
</thinking>
<output>
[Your final, concise answer to the query. This is the only part that will be shown to the \
user.]
</output>"""

_OUTPUT = re.compile(r"<output>(.*?)(?:</output>|$)", re.DOTALL)


def extract_output(text: str) -> str:
    """The text inside ``<output>`` (an unclosed tag runs to the end); the whole reply when the
    model used no tag, so a weak model's answer is never lost."""
    match = _OUTPUT.search(text)
    if match and match.group(1).strip():
        return match.group(1).strip()
    return text.strip()


def run(ctx: RunContext) -> Answer:
    system = INSTRUCTIONS if not ctx.system_prompt else f"{ctx.system_prompt}\n\n{INSTRUCTIONS}"
    messages = [Message("system", system)] + [m for m in ctx.messages
                                              if m.role not in ("system", "developer")]
    completion = ctx.complete(messages, answer=True)
    full = completion.text
    return Answer(text=extract_output(full), reasoning=full,
                  finish_reason=completion.choices[0].finish_reason or "stop")
