"""``compact``: summarise the older turns of a conversation that nears the context limit, then
answer on the compacted conversation.

The conversation is measured in tokens: exactly by the upstream (``ctx.count_tokens``:
llama-server's ``POST /tokenize``) where it can count, else by a local *estimate* that
needs no download: characters / 4 plus 4 per message (OpenAI's rule of thumb; off by tens of
per cent on code or non-English text). When the total is at most ``compact_max_tokens`` the
conversation goes upstream unchanged. Otherwise the messages before the last
``compact_keep_turns`` turns (a turn starts at a user message; the current question is always
kept) are summarised in one call (the older messages themselves, with their roles, plus a
request for a summary), and the answer call sees the system prompt with the summary appended,
then the kept turns verbatim. The answer call is the final call and streams.

Calls: 1 when the conversation fits (or nothing is old enough to summarise), else 2.
Critical path: the same. The summary call sets ``temperature=0`` and ``max_tokens`` to
``compact_summary_tokens``; the answer keeps the client's parameters. Metadata
``optillm_compact``: ``{"tokens", "method": "tokenize" | "estimate", "compacted",
"summarised_messages", "kept_messages"}``.

Options (request body): ``compact_max_tokens`` (int, 64-10000000, default 3000),
``compact_keep_turns`` (int, 1-100, default 2), ``compact_summary_tokens`` (int, 16-8192,
default 512).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import OptillmError
from ..options import opt
from ..toolkit.context import Answer, RunContext
from ..types import Completion, Message

SLUG = "compact"
STREAMS = True
PER_MESSAGE_TOKENS = 4


@dataclass(frozen=True)
class Options:
    compact_max_tokens: int = opt(3000, ge=64, le=10_000_000, unit="tokens")
    compact_keep_turns: int = opt(2, ge=1, le=100)
    compact_summary_tokens: int = opt(512, ge=16, le=8192, unit="tokens")


def estimate_tokens(messages: Sequence[Message]) -> int:
    """The local estimate: characters / 4 (rounded up) plus 4 per message."""
    return sum(-(-len(m.text) // 4) + PER_MESSAGE_TOKENS for m in messages)


def count_tokens(ctx: RunContext, messages: Sequence[Message]) -> tuple[int, str]:
    """``(tokens, "tokenize" | "estimate")``: the upstream's count of the messages' texts
    (joined by newlines) plus the per-message overhead; ``estimate_tokens`` when the upstream
    cannot count (``CapabilityError``) or the count failed (unreachable, timed out, refused)."""
    try:
        exact = ctx.count_tokens("\n".join(m.text for m in messages))
    except OptillmError:
        return estimate_tokens(messages), "estimate"
    return exact + PER_MESSAGE_TOKENS * len(messages), "tokenize"


def split_turns(messages: Sequence[Message], keep_turns: int
                ) -> tuple[list[Message], list[Message], list[Message]]:
    """``(system messages, older messages, kept messages)``: kept starts at the
    ``keep_turns``-th user message from the end."""
    system = [m for m in messages if m.role in ("system", "developer")]
    rest = [m for m in messages if m.role not in ("system", "developer")]
    users = [i for i, m in enumerate(rest) if m.role == "user"]
    if not users:
        return system, [], rest
    start = users[-min(keep_turns, len(users))]
    return system, rest[:start], rest[start:]


SUMMARY_REQUEST = ("Summarise the conversation so far in a few short paragraphs: the facts, "
                   "decisions, names, numbers and open questions someone needs to continue it. "
                   "Write only the summary.")


def run(ctx: RunContext) -> Answer | Completion:
    opts = ctx.options
    tokens, method = count_tokens(ctx, ctx.messages)
    system, older, kept = split_turns(ctx.messages, opts.compact_keep_turns)
    record = {"tokens": tokens, "method": method, "compacted": False,
              "summarised_messages": 0, "kept_messages": len(ctx.messages)}
    if tokens <= opts.compact_max_tokens or not older:
        final = ctx.complete(final=True)
    else:
        summary = ctx.complete(system + older + [Message("user", SUMMARY_REQUEST)],
                               temperature=0, max_tokens=opts.compact_summary_tokens).text
        note = f"Summary of the earlier conversation:\n{summary.strip()}"
        if system:
            head = [Message(system[0].role, f"{system[0].text}\n\n{note}")] + system[1:]
        else:
            head = [Message("system", note)]
        final = ctx.complete(head + kept, final=True)
        record.update(compacted=True, summarised_messages=len(older), kept_messages=len(kept))
    return Answer(final.text, finish_reason=final.choices[0].finish_reason or "stop",
                  metadata={"optillm_compact": record})
