"""Has SLUG and a run() that fits neither run(ctx) nor OptiLLM's four-argument signature."""

SLUG = "two_args"


def run(ctx, extra):
    return "x"
