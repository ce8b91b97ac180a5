"""Declares nothing a plugin declares: no SLUG, no run(), no hook."""

CONSTANT = 3


def helper(x):
    return x + 1
