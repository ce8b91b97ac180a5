"""The gateway's YAML config (``--config optillm.yaml``): model groups, settings, profiles.

Shape (LLMProxy's ``model_groups`` and ``general_settings``, Composite LLM's ``profiles``)::

    model_groups:
      gpt-4o-mini:                     # the public model name clients send
        - base_url: https://api.openai.com/v1
          api_key: ${OPENAI_API_KEY}   # ${VAR} and ${VAR:-default} are expanded
          model: gpt-4o-mini           # the upstream's name (default: the public name)
          weight: 3                    # weighted round-robin; 0 = fallback only
          rpm: 500                     # optional requests / tokens per minute limits
          tpm: 200000
        - provider: litellm            # through litellm.completion (the 'litellm' extra)
          model: anthropic/claude-3-5-haiku-latest   # LiteLLM's model string
          weight: 0                    # base_url / api_key optional (api_base / api_key)
    general_settings:
      retries: 2                       # other endpoints tried after a failure
      allowed_fails: 3                 # failures before an endpoint cools down
      cooldown_time: 30                # seconds
      cache_ttl: 3600                  # seconds; 0 disables the response cache
      redis_url: redis://127.0.0.1:6379/0   # else an embedded on-disk store
      cache_dir: ~/.cache/optillm/store
      host: 127.0.0.1
      port: 8000
    profiles:
      fast-council: {strategy: council, members: [a, b], chairman: a, settings: {...}}
      my-moa: {strategy: moa, proposers: [a, b], aggregator: a}
    cli_agents:                        # model cli/<name> (or composite/composer-cli/<name>)
      coder:
        command: [my-agent, --print]   # argv, run without a shell
        timeout: 120                   # seconds (504 when exceeded)
        workdir: ~/src/project         # default: a new temporary folder per call
        input: stdin                   # stdin (a transcript), json (messages), or arg
                                       # ({prompt} / {query} in command are replaced)
        max_output_bytes: 1048576      # 502 when the agent prints more
        env: {AGENT_MODE: fast}        # the agent's environment is PATH, HOME, LANG + these

``load_config(path, environ)`` validates it with ``jsonschema`` and raises ``ConfigError`` whose
message names the file, the line and the field of the first problem. ``${VAR}`` reads
``environ``, the environment the settings were read from (``Settings.environ``); this module
never reads ``os.environ`` itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "model_groups": {
            "type": "object",
            "additionalProperties": {
                "type": "array", "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "anyOf": [{"required": ["base_url"]},  # LiteLLM needs none
                              {"required": ["provider"],
                               "properties": {"provider": {"const": "litellm"}}}],
                    "properties": {
                        "base_url": {"type": "string", "pattern": "^https?://"},
                        "provider": {"enum": ["openai", "litellm"]},
                        "api_key": {"type": ["string", "null"]},
                        "model": {"type": "string", "minLength": 1},
                        "weight": {"type": "number", "minimum": 0},
                        "rpm": {"type": "integer", "minimum": 1},
                        "tpm": {"type": "integer", "minimum": 1},
                        "name": {"type": "string"},
                        "azure_api_version": {"type": "string"},
                        "timeout": {"type": "number", "exclusiveMinimum": 0},
                    },
                },
            },
        },
        "general_settings": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "retries": {"type": "integer", "minimum": 0},
                "allowed_fails": {"type": "integer", "minimum": 1},
                "cooldown_time": {"type": "number", "minimum": 0},
                "cache_ttl": {"type": "number", "minimum": 0},
                "redis_url": {"type": ["string", "null"]},
                "cache_dir": {"type": "string"},
                "host": {"type": "string"},
                "port": {"type": "integer", "minimum": 0, "maximum": 65535},
            },
        },
        "cli_agents": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["command"],
                "properties": {
                    "command": {"type": "array", "minItems": 1,
                                "items": {"type": "string", "minLength": 1}},
                    "timeout": {"type": "number", "exclusiveMinimum": 0},
                    "workdir": {"type": "string", "minLength": 1},
                    "input": {"enum": ["stdin", "json", "arg"]},
                    "max_output_bytes": {"type": "integer", "minimum": 1},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        },
        "profiles": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,  # a typo ('member:') must not pass silently
                "required": ["strategy"],
                "properties": {
                    "strategy": {"type": "string", "minLength": 1},
                    "model": {"type": "string"},
                    "proposers": {"type": "array", "items": {"type": "string"}},
                    "aggregator": {"type": "string"},
                    "members": {"type": "array", "items": {"type": "string"}},
                    "chairman": {"type": "string"},
                    "settings": {"type": "object"},
                },
            },
        },
    },
}


class ConfigError(ValueError):
    """The config file is unreadable or invalid; the message names file, line and field."""


@dataclass(frozen=True)
class Endpoint:
    """One upstream endpoint of a model group."""

    base_url: str
    model: str
    api_key: str | None = None
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    name: str = ""
    azure_api_version: str | None = None
    timeout: float | None = None
    #: ``openai`` (an OpenAI-compatible HTTP API) or ``litellm`` (``litellm.completion`` on
    #: ``model``, LiteLLM's model string; ``base_url`` optional, its ``api_base``).
    provider: str = "openai"


@dataclass(frozen=True)
class GeneralSettings:
    retries: int = 2
    allowed_fails: int = 3
    cooldown_time: float = 30.0
    cache_ttl: float = 3600.0
    redis_url: str | None = None
    cache_dir: str = "~/.cache/optillm/store"
    host: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class Profile:
    """A Composite LLM profile: a strategy and its topology."""

    name: str
    strategy: str
    model: str | None = None
    proposers: tuple[str, ...] = ()
    aggregator: str | None = None
    members: tuple[str, ...] = ()
    chairman: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CliAgent:
    """A local command served as model ``cli/<name>`` (``optillm.upstream.cli_agent``).
    ``env`` is the agent's whole environment (PATH, HOME, LANG of the server, PATH
    ``os.defpath`` when it has none, then the configured variables)."""

    name: str
    command: tuple[str, ...]
    timeout: float = 300.0
    workdir: str | None = None
    input: str = "stdin"
    max_output_bytes: int = 1 << 20
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayConfig:
    model_groups: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    general: GeneralSettings = GeneralSettings()
    profiles: dict[str, Profile] = field(default_factory=dict)
    path: str | None = None
    cli_agents: dict[str, CliAgent] = field(default_factory=dict)


def expand_vars(text: str, environ: Mapping[str, str]) -> str:
    """``${VAR}`` / ``${VAR:-default}`` replaced from ``environ`` (``Settings.environ``).

    Raises: ConfigError naming a variable that is unset and has no default.
    """
    def sub(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (use ${{{name}:-default}} "
                          f"for a default)")

    return _VAR.sub(sub, text)


def _line_of(node: Any, path: list) -> int | None:
    """The 1-based line of the YAML node at ``path`` (or of its nearest parent)."""
    import yaml

    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) \
                and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def parse_config(text: str, path: str = "<config>",
                 environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Parse and validate config ``text``; ``${VAR}`` reads ``environ`` (no variables
    when None).

    Raises: ConfigError naming ``path``, the line and the field of the first problem.
    """
    import jsonschema
    import yaml

    try:
        expanded = expand_vars(text, environ or {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        root = yaml.compose(expanded, Loader=yaml.SafeLoader)
        data = yaml.safe_load(expanded) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") \
            from None
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        fields = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        line = _line_of(root, list(err.absolute_path))
        raise ConfigError(f"{path}: line {line}: {fields}: {err.message}")
    groups = {}
    for public, endpoints in (data.get("model_groups") or {}).items():
        groups[public] = tuple(Endpoint(model=e.get("model", public),
                                        base_url=e.get("base_url", ""),
                                        **{k: v for k, v in e.items()
                                           if k not in ("model", "base_url")})
                               for e in endpoints)
        if not any(e.weight > 0 for e in groups[public]):
            line = _line_of(root, ["model_groups", public])
            raise ConfigError(f"{path}: line {line}: model_groups.{public}: at least one "
                              f"endpoint needs a weight above 0 (0 means fallback only)")
    general = GeneralSettings(**(data.get("general_settings") or {}))
    profiles = {}
    for name, p in (data.get("profiles") or {}).items():
        profiles[name] = Profile(name=name, strategy=p["strategy"], model=p.get("model"),
                                 proposers=tuple(p.get("proposers") or ()),
                                 aggregator=p.get("aggregator"),
                                 members=tuple(p.get("members") or ()),
                                 chairman=p.get("chairman"), settings=p.get("settings") or {})
    agents = {}
    env = environ or {}  # the agents see PATH, HOME, LANG of the settings' environment
    for name, a in (data.get("cli_agents") or {}).items():
        if a.get("input") == "arg" and not any("{prompt}" in c or "{query}" in c
                                               for c in a["command"]):
            line = _line_of(root, ["cli_agents", name, "command"])
            raise ConfigError(f"{path}: line {line}: cli_agents.{name}.command: 'input: arg' "
                              f"needs a {{prompt}} or {{query}} argument")
        base = {"PATH": os.defpath,
                **{k: env[k] for k in ("PATH", "HOME", "LANG", "LC_ALL") if k in env}}
        agents[name] = CliAgent(name=name, command=tuple(a["command"]),
                                timeout=float(a.get("timeout", 300.0)),
                                workdir=os.path.expanduser(a["workdir"])
                                if a.get("workdir") else None,
                                input=a.get("input", "stdin"),
                                max_output_bytes=a.get("max_output_bytes", 1 << 20),
                                env={**base, **(a.get("env") or {})})
    return GatewayConfig(groups, general, profiles, path, agents)


def load_config(path: str, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the config file at ``path``; ``${VAR}`` reads ``environ``
    (``Settings.environ``; no variables when None).

    Raises: ConfigError (unreadable file, invalid YAML, a field that fails validation).
    """
    try:
        with open(os.path.expanduser(path)) as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return parse_config(text, path, environ)
