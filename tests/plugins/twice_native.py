"""A native plugin: registers through the pluggy hook with typed per-request options."""

from dataclasses import dataclass

from optillm import Answer, Approach, hookimpl


@dataclass(frozen=True)
class Options:
    twice_rounds: int = 2


def run(ctx):
    texts = ctx.map(lambda _: ctx.complete(max_tokens=16).text, range(ctx.options.twice_rounds))
    return Answer(" | ".join(texts))


@hookimpl
def register_approaches(register):
    register(Approach(slug="twice", run=run, options=Options, description="n answers joined",
                      source=__file__))
