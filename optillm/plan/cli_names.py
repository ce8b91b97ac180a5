"""The command-line agent model names: ``cli/<name>`` and ``composite/composer-cli/<name>``.

After Composite LLM's "Composer CLI" model. Both are plain passthrough plans on the model
``cli/<name>``, which the upstream stack serves by running the gateway config's
``cli_agents.<name>`` (``optillm.upstream.cli_agent``); approaches reach the agent the same
way (``moa-cli/<name>``, ``council_models: [cli/<name>, ...]``). ``AgentNames`` answers an
unknown name with a 404 naming the configured agents, before any upstream call. (A form of
``optillm.plan.model_names``' kind, kept here because it needs the app's agent list.)
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import BadRequestError, NotFoundError
from ..hookspecs import hookimpl
from .planner import SINGLE, Plan

CLI = "cli/"
COMPOSER = "composite/composer-cli/"
PLUGIN_NAME = "optillm.cli_agents"


def agent_model(model: str) -> str | None:
    """``cli/<name>`` for either form, else None (a malformed one: ``BadRequestError``)."""
    for prefix in (COMPOSER, CLI):
        if model.startswith(prefix):
            name = model[len(prefix):]
            if not name.strip() or "/" in name:
                raise BadRequestError(f"model {model!r}: expected '{prefix}<agent name>'",
                                      param="model")
            return CLI + name
    return None


class AgentNames:
    """The ``parse_model`` form for one app's agents (registered per app, ``tryfirst``)."""

    def __init__(self, names: Iterable[str]):
        self.names = frozenset(names)

    @hookimpl(tryfirst=True)
    def parse_model(self, model, registry):
        """Raises: NotFoundError for an agent name that is not configured."""
        if not model.startswith(("cli/", "composite/composer-cli/")):
            return None
        target = agent_model(model)
        if target[len(CLI):] not in self.names:
            known = ", ".join(CLI + n for n in sorted(self.names)) or "none configured"
            raise NotFoundError(f"unknown CLI agent {model!r} (the 'cli_agents' section of "
                                f"--config; known: {known})", param="model",
                                code="cli_agent_not_found")
        return Plan(SINGLE, ("none",), target)


def install(plugin_manager, names: Iterable[str]) -> None:
    """Register the agent name forms for ``names`` (once per plugin manager)."""
    if plugin_manager.get_plugin(PLUGIN_NAME) is None:
        plugin_manager.register(AgentNames(names), name=PLUGIN_NAME)
