"""A native hook module: a ``parse_model`` form of its own, ``loud/<model>`` -> the ``shout``
approach on ``<model>`` with two exclamation marks."""

from optillm import hookimpl
from optillm.types import SINGLE, Plan

PREFIX = "loud/"


@hookimpl
def parse_model(model, registry):
    if not model.startswith(PREFIX) or "shout" not in registry:
        return None
    return Plan(SINGLE, ("shout",), model[len(PREFIX):], {"shout_marks": 2})
