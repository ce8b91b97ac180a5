"""Composite LLM's profiles as model names: ``profile/<name>`` (also
``composite/profile/<name>``) runs a profile of the ``--config`` file.

After Composite LLM (its YAML profiles holding the topology of a strategy). A profile only
chooses a plan; the strategies are ordinary approaches. (``composite/<strategy>/<model>`` and
the 404 for ``profile/<name>`` without profiles are in ``optillm.plan.model_names``.)
Profiles in the config::

    profiles:
      fast-council: {strategy: council, members: [a, b], chairman: a}
      my-moa: {strategy: moa, proposers: [a, b], aggregator: c, settings: {moa_candidates: 2}}

The topology becomes the strategy's options: ``members`` -> ``council_models``, ``chairman``
-> ``chairman_model``, ``proposers`` -> ``moa_proposers``, ``aggregator`` -> ``moa_aggregator``;
``settings`` are options of the strategy's approaches, passed as they are. The base model is
``model``, else the chairman or first member (council), else the aggregator or first proposer
(moa). Request body fields override a profile's options, as they override every model-name
option. An unknown name is a 404 naming the known profiles.

Profiles are per app: ``install(plugin_manager, registry, config)`` (called by ``create_app``)
checks every profile against the registry, so a bad profile stops start-up with a
``ConfigError`` naming it, and registers a ``ProfileParser`` holding them with the app's plugin
manager, where it answers before every other model-name form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import BadRequestError, NotFoundError
from ..hookspecs import hookimpl
from ..types import Plan
from ..upstream.config import ConfigError, Profile
from .model_names import profile_name
from .planner import split_slugs
from .registry import Registry

PLUGIN_NAME = "optillm.profiles"

#: Profile topology fields -> (the approach that reads them, its option).
TOPOLOGY = {"members": ("council", "council_models"),
            "chairman": ("council", "chairman_model"),
            "proposers": ("moa", "moa_proposers"),
            "aggregator": ("moa", "moa_aggregator")}


def _unknown_slugs(slugs: tuple[str, ...], registry: Registry) -> list[str]:
    return [s for s in slugs if s not in registry]


def profile_plan(profile: Profile, registry: Registry) -> Plan:
    """The plan a profile stands for (see the module docstring).

    Raises: ConfigError naming the profile: an unknown strategy, a topology field its
    strategy does not read, a setting that is no option of its approaches or has a bad
    value, no base model.
    """
    where = f"profile {profile.name!r}"
    try:
        op, slugs = split_slugs(profile.strategy)
    except BadRequestError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    unknown = _unknown_slugs(slugs, registry)
    if unknown:
        raise ConfigError(f"{where}: unknown strategy {unknown[0]!r}; known approaches: "
                          f"{', '.join(registry)}")
    options: dict[str, Any] = {}
    for fname, (slug, option) in TOPOLOGY.items():
        value = getattr(profile, fname)
        if value in (None, ()):
            continue
        if slug not in slugs:
            raise ConfigError(f"{where}: '{fname}' belongs to strategy {slug!r}, not "
                              f"{profile.strategy!r}")
        options[option] = list(value) if isinstance(value, tuple) else value
    known = {f.name for s in slugs if registry.get(s).options is not None
             for f in dataclasses.fields(registry.get(s).options)}
    for key, value in profile.settings.items():
        if key not in known:
            raise ConfigError(f"{where}: setting {key!r} is no option of {profile.strategy!r} "
                              f"(its options: {', '.join(sorted(known)) or 'none'})")
        options[key] = value
    for slug in slugs:
        try:
            registry.build_options(registry.get(slug), {}, options)
        except BadRequestError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
    model = profile.model or profile.chairman or next(iter(profile.members), None) \
        or profile.aggregator or next(iter(profile.proposers), None)
    if not model:
        raise ConfigError(f"{where}: no base model; set 'model'")
    return Plan(op, slugs, model, options)


class ProfileParser:
    """The ``profile/<name>`` form for one app's profiles (a plugin registered per app)."""

    def __init__(self, profiles: Mapping[str, Profile], registry: Registry):
        """Raises: ConfigError for the first bad profile."""
        self.plans = {name: profile_plan(p, registry) for name, p in profiles.items()}

    @hookimpl(tryfirst=True)
    def parse_model(self, model, registry):
        """Raises: NotFoundError naming the known profiles for an unknown name."""
        name = profile_name(model)
        if name is None:
            return None
        plan = self.plans.get(name)
        if plan is None:
            raise NotFoundError(f"unknown profile {name!r}; known profiles: "
                                f"{', '.join(sorted(self.plans))}", param="model",
                                code="profile_not_found")
        return plan


def install(plugin_manager, registry: Registry, config) -> None:
    """Register ``config``'s profiles (a ``GatewayConfig`` or None) with ``plugin_manager``
    as the ``profile/<name>`` form; does nothing without profiles or when already done.

    Raises: ConfigError for the first bad profile.
    """
    if config is None or not config.profiles \
            or plugin_manager.get_plugin(PLUGIN_NAME) is not None:
        return
    plugin_manager.register(ProfileParser(config.profiles, registry), name=PLUGIN_NAME)
