"""A native plugin in the short form (``SLUG`` + ``run(ctx)``, typed ``Options``): answers
with the model's reply upper-cased and ``shout_marks`` exclamation marks."""

from dataclasses import dataclass

from optillm import Answer

SLUG = "shout"


@dataclass(frozen=True)
class Options:
    shout_marks: int = 1


def run(ctx):
    reply = ctx.complete(answer=True, max_tokens=16).text
    return Answer(reply.upper() + "!" * ctx.options.shout_marks)
