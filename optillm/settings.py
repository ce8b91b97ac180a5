"""Settings: one frozen value built from command-line flags and the environment.

This is the only module that reads ``os.environ``. Every flag ``--foo-bar`` also reads
``OPTILLM_FOO_BAR``; a flag given on the command line wins over the variable. Upstream
credentials keep their providers' names: ``OPENAI_API_KEY``, ``AZURE_OPENAI_API_KEY``,
``AZURE_API_VERSION``, ``AZURE_API_BASE``. ``OPTILLM_API_KEY`` guards the proxy only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The model name the embedded local model is served under.
LOCAL_MODEL_NAME = "Qwen2.5-Coder-0.5B-Instruct"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


#: OptiLLM 0.4.0's server flags that set an approach option's default for every request (a
#: request's own value still wins): flag, OptiLLM's environment variable, option, type. The
#: flag's ``OPTILLM_<FLAG>`` spelling is read too. ``--cepo_<field>`` flags go the same way.
OPTILLM_OPTION_FLAGS: tuple[tuple[str, str, str, type], ...] = (
    ("--best-of-n", "OPTILLM_BEST_OF_N", "best_of_n", int),
    ("--mcts-simulations", "OPTILLM_SIMULATIONS", "mcts_simulations", int),
    ("--mcts-exploration", "OPTILLM_EXPLORATION", "mcts_exploration", float),
    ("--mcts-depth", "OPTILLM_DEPTH", "mcts_depth", int),
    ("--rstar-max-depth", "OPTILLM_RSTAR_MAX_DEPTH", "rstar_max_depth", int),
    ("--rstar-num-rollouts", "OPTILLM_RSTAR_NUM_ROLLOUTS", "rstar_num_rollouts", int),
    ("--rstar-c", "OPTILLM_RSTAR_C", "rstar_c", float),
)
_NOT_FLAGS = ("environ", "option_defaults")


@dataclass(frozen=True)
class Settings:
    """Server settings. Units: seconds unless the name says otherwise.

    With neither ``base_url`` nor an Azure endpoint, the embedded local model is the upstream.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    base_url: str | None = None
    model: str | None = None
    approach: str = "auto"
    optillm_api_key: str | None = None
    plugins_dir: str | None = None
    log_conversations: bool = False
    conversation_log_dir: str = "conversations"
    batch_mode: bool = False
    batch_size: int = 4
    batch_wait_ms: int = 10
    return_full_response: bool = False
    log: str = "info"
    log_format: str = "text"
    access_log: bool = True
    workers: int = 1
    worker_class: str = "gthread"
    dev: bool = False
    metrics_dir: str | None = None
    local_model: str | None = None
    local_slots: int = 4
    local_ctx_size: int = 4096
    #: where the embedded model's assembled weights are kept (``$XDG_CACHE_HOME/optillm/models``,
    #: else ``~/.cache/optillm/models``) and the base of its state files (``$XDG_RUNTIME_DIR``)
    model_cache_dir: str | None = None
    runtime_dir: str | None = None
    #: a learned router table (``optillm-eval fit-router``): ``auto`` then routes through it
    router_table: str | None = None
    config: str | None = None
    cepo_config: str | None = None
    #: OptiLLM's ``--n``: choices per request when the request sends no ``n``
    n: int = 1
    #: OptiLLM's ``--launch-gui``: here the web face is always served (``/playground``)
    launch_gui: bool = False
    data_dir: str | None = None
    config_dir: str | None = None
    allow_private_urls: str = ""
    web_search_url: str | None = None
    web_search_api_key: str | None = None
    redis_url: str | None = None
    cache_ttl: float = -1.0
    cache_dir: str = "~/.cache/optillm/store"
    max_body_bytes: int = 4 * 1024 * 1024
    max_parallel_calls: int = 16
    upstream_timeout: float = 600.0
    upstream_retries: int = 2
    upstream_provider: str = "openai"
    #: OptiLLM's ``--ssl-verify`` / ``--no-ssl-verify`` / ``--ssl-cert-path``: how the
    #: upstream's TLS certificate is checked (``tls_verify``)
    ssl_verify: bool = True
    ssl_cert_path: str | None = None
    rate_limit: str | None = None
    keepalive_interval: float = 5.0
    cors_allow_origins: str = ""
    openai_api_key: str | None = None
    azure_api_key: str | None = None
    azure_api_version: str | None = None
    azure_api_base: str | None = None
    #: The environment these settings were read from (empty when built directly), for the
    #: ``${VAR}`` references of the gateway config (``optillm.upstream.config``); not a flag.
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False,
                                                   compare=False)
    #: Approach option defaults from OptiLLM's server flags (``OPTILLM_OPTION_FLAGS``,
    #: ``--cepo_<field>``); under a request's own values, over ``--cepo-config``'s.
    option_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.router_table and self.approach == "auto":  # auto = the learned router's pick
            object.__setattr__(self, "approach", "router")

    @property
    def private_networks(self) -> bool | tuple[str, ...]:
        """``--allow-private-urls`` for ``optillm.toolkit.net.fetch``: False (none, the default),
        True
        (``all``: every non-global address but the cloud metadata ones) or the CIDRs listed."""
        value = self.allow_private_urls.strip()
        if not value or value.lower() in ("none", "false", "0"):
            return False
        if value.lower() in ("all", "true", "1"):
            return True
        return tuple(v.strip() for v in value.split(",") if v.strip())

    @property
    def tls_verify(self) -> bool | str:
        """The upstream clients' ``verify``: the CA bundle at ``--ssl-cert-path`` when set,
        else whether to check certificates at all (``--no-ssl-verify``: False)."""
        if not self.ssl_verify:
            return False
        return os.path.expanduser(self.ssl_cert_path) if self.ssl_cert_path else True

    @property
    def cors_origins(self) -> list[str]:
        """``--cors-allow-origins`` as a list (``["*"]`` for any origin; empty: CORS off)."""
        return [o.strip().rstrip("/") for o in self.cors_allow_origins.split(",") if o.strip()]

    @property
    def data_path(self) -> str:
        """The data folder (``--data-dir``; ``~/.local/share/optillm`` when unset)."""
        return os.path.expanduser(self.data_dir or "~/.local/share/optillm")

    @property
    def models_path(self) -> str:
        """The embedded model's weights folder (``--model-cache-dir``; default
        ``~/.cache/optillm/models``), never inside site-packages."""
        return os.path.expanduser(self.model_cache_dir or "~/.cache/optillm/models")

    @property
    def config_path(self) -> str:
        """The config folder (``--config-dir``; ``~/.config/optillm`` when unset)."""
        return os.path.expanduser(self.config_dir or "~/.config/optillm")

    @property
    def uses_local_model(self) -> bool:
        return not self.base_url and not self.azure_api_base \
            and self.upstream_provider != "litellm"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def for_algorithms(self) -> Settings:
        """These settings as approaches and plugins see them (``ctx.settings``): server policy
        (folders, networks, the search backend) without the environment and without the
        proxy's and the upstream's keys, which no algorithm needs."""
        return dataclasses.replace(self, environ={}, openai_api_key=None, azure_api_key=None,
                                   optillm_api_key=None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from the environment alone (``gunicorn 'optillm.app:create_app()'``)."""
        return cls.from_args([], environ)

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
        """Parse flags (``argv``) over ``OPTILLM_*`` variables over the defaults.

        Raises:
            SystemExit: a flag or variable is malformed (argparse's usage message).
        """
        env = os.environ if environ is None else environ
        parser = build_parser()
        argv, cepo = _cepo_flags(list(argv or []), parser)
        ns = parser.parse_args(argv)
        values: dict[str, Any] = {}
        defaults = cls()
        values["option_defaults"] = {**_option_defaults(ns, env, parser), **cepo}
        for f in dataclasses.fields(cls):
            if f.name in _NOT_FLAGS:
                continue
            flag_value = getattr(ns, f.name, None)
            env_value = env.get("OPTILLM_" + f.name.upper())
            if flag_value is not None:
                raw = flag_value
            elif env_value not in (None, ""):
                raw = env_value
            else:
                continue
            default = getattr(defaults, f.name)
            try:
                if isinstance(default, bool):
                    values[f.name] = _bool(raw)
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = str(raw)
            except ValueError:
                parser.error(f"invalid value for {f.name}: {raw!r}")
        # Provider credentials keep their providers' variable names.
        values.setdefault("openai_api_key", env.get("OPENAI_API_KEY") or None)
        values.setdefault("azure_api_key", env.get("AZURE_OPENAI_API_KEY") or None)
        values.setdefault("azure_api_version", env.get("AZURE_API_VERSION") or None)
        values.setdefault("azure_api_base", env.get("AZURE_API_BASE") or None)
        # prometheus-client's own variable: multiprocess metrics (set by the CLI for gunicorn)
        values.setdefault("metrics_dir", env.get("PROMETHEUS_MULTIPROC_DIR") or None)
        values["environ"] = dict(env)
        # The user's data and config folders (XDG base directories), for plugins that persist.
        # (unset: ~/.local/share/optillm and ~/.config/optillm, see data_path / config_path)
        if env.get("XDG_DATA_HOME"):
            values.setdefault("data_dir", os.path.join(env["XDG_DATA_HOME"], "optillm"))
        if env.get("XDG_CONFIG_HOME"):
            values.setdefault("config_dir", os.path.join(env["XDG_CONFIG_HOME"], "optillm"))
        if env.get("XDG_CACHE_HOME"):
            values.setdefault("model_cache_dir", os.path.join(env["XDG_CACHE_HOME"], "optillm",
                                                              "models"))
        values.setdefault("runtime_dir", env.get("XDG_RUNTIME_DIR") or None)
        if values.get("base_url") is None and env.get("OPENAI_BASE_URL"):
            values["base_url"] = env["OPENAI_BASE_URL"]
        settings = cls(**{k: v for k, v in values.items() if v is not None})
        if settings.port < 0 or settings.port > 65535:
            parser.error("--port must be between 0 and 65535")
        if settings.batch_size < 1 or settings.batch_wait_ms < 0:
            parser.error("--batch-size must be >= 1 and --batch-wait-ms >= 0")
        if settings.local_slots < 1 or settings.max_parallel_calls < 1:
            parser.error("--local-slots and --max-parallel-calls must be >= 1")
        if settings.workers < 1:
            parser.error("--workers must be >= 1")
        if settings.n < 1:
            parser.error("--n must be >= 1")
        if settings.worker_class not in ("gevent", "gthread"):
            parser.error("--worker-class must be gevent or gthread")
        if settings.log_format not in ("text", "json"):
            parser.error("--log-format must be text or json")
        return settings

    def to_env(self) -> dict[str, str]:
        """``OPTILLM_*`` variables that reproduce these settings (for worker processes)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "option_defaults" and value:
                out["OPTILLM_OPTION_DEFAULTS"] = json.dumps(dict(value))
            if value is None or f.name in _NOT_FLAGS or f.name.startswith(("openai_", "azure_")):
                continue
            out["OPTILLM_" + f.name.upper()] = str(value).lower() if isinstance(value, bool) \
                else str(value)
        return out


def _option_defaults(ns: argparse.Namespace, env: Mapping[str, str],
                     parser: argparse.ArgumentParser) -> dict[str, Any]:
    """OptiLLM's option flags (``OPTILLM_OPTION_FLAGS``): the flag, else ``OPTILLM_<FLAG>``,
    else OptiLLM's own variable; ``OPTILLM_OPTION_DEFAULTS`` (JSON, what ``to_env`` writes)
    under them."""
    out: dict[str, Any] = {}
    encoded = env.get("OPTILLM_OPTION_DEFAULTS")
    if encoded:
        try:
            out.update(json.loads(encoded))
        except ValueError:
            parser.error("OPTILLM_OPTION_DEFAULTS must be a JSON object")
    for flag, legacy, option, kind in OPTILLM_OPTION_FLAGS:
        raw = getattr(ns, option, None)
        for name in ("OPTILLM_" + option.upper(), legacy):
            if raw is None and env.get(name) not in (None, ""):
                raw = env[name]
        if raw is None:
            continue
        try:
            out[option] = kind(raw)
        except ValueError:
            parser.error(f"invalid value for {flag}: {raw!r}")
    return out


def _cepo_flags(argv: list[str], parser: argparse.ArgumentParser
                ) -> tuple[list[str], dict[str, Any]]:
    """OptiLLM's ``--cepo_<field> VALUE`` flags, taken out of ``argv`` as ``cepo_<field>``
    option defaults (values read as YAML scalars: 3, 0.7, true); the registry checks them
    against cepo's options at start-up. ``--cepo_config_file`` is ``--cepo-config``."""
    import yaml

    rest: list[str] = []
    found: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name.startswith("--cepo_") and name != "--cepo_config_file":
            if not eq:
                if i + 1 >= len(argv):
                    parser.error(f"{name} needs a value")
                value, i = argv[i + 1], i + 1
            found[name[2:]] = yaml.safe_load(value)
        elif name == "--cepo_config_file":
            rest.append("--cepo-config" + (f"={value}" if eq else ""))
        else:
            rest.append(arg)
        i += 1
    return rest, found


def _version() -> str:
    from . import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``optillm`` command's flags. Every default is None so the environment can fill in."""
    p = argparse.ArgumentParser(
        prog="optillm",
        description="OpenAI-compatible optimizing inference proxy. Every flag also reads "
                    "OPTILLM_<FLAG> (e.g. OPTILLM_BASE_URL).")
    add = p.add_argument
    add("--host", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, help="port to listen on (default 8000)")
    add("--base-url", help="OpenAI-compatible upstream, e.g. https://api.openai.com/v1; "
                           "without it (and without AZURE_API_BASE) the embedded local model runs")
    add("--model", help="model used when a request names only approaches")
    add("--approach", help="default approach; 'auto' (default) means as the model name says")
    add("--optillm-api-key", help="key clients must send to use the proxy (never sent upstream)")
    add("--plugins-dir", help="folder of drop-in plugin .py files")
    add("--log-conversations", action="store_const", const=True,
        help="write one JSON line per request to --conversation-log-dir")
    add("--conversation-log-dir", help="folder for conversation logs (default ./conversations)")
    add("--batch-mode", action="store_const", const=True,
        help="coalesce upstream calls that arrive within --batch-wait-ms")
    add("--batch-size", type=int, help="largest batch (default 4)")
    add("--batch-wait-ms", type=int, help="batch collection window in ms (default 10)")
    add("--return-full-response", action="store_const", const=True,
        help="return the approach's reasoning trace instead of only the answer, where it has one")
    add("--log", choices=["debug", "info", "warning", "error", "critical"], help="log level")
    add("--log-format", choices=["text", "json"],
        help="log lines as text (default) or one JSON object per line")
    add("--no-access-log", dest="access_log", action="store_const", const=False,
        help="no access log line per request (gunicorn)")
    add("--workers", type=int, help="gunicorn worker processes (default 1)")
    add("--worker-class", choices=["gevent", "gthread"],
        help="gunicorn worker class: gthread (default; --max-parallel-calls threads, at least "
             "4) or gevent")
    add("--dev", action="store_const", const=True,
        help="Flask's development server instead of gunicorn (one process, not for production)")
    add("--version", action="version", version=f"optillm {_version()}")
    add("--local-model", help="the embedded llama-server's model: a GGUF file or a short name, "
                              "qwen2.5-coder-0.5b (the default) or smollm2-135m")
    add("--local-slots", type=int, help="parallel slots of the embedded llama-server (-np)")
    add("--local-ctx-size", type=int, help="context size per slot of the embedded llama-server")
    add("--model-cache-dir", help="folder of the embedded model's assembled weights (default "
                                  "$XDG_CACHE_HOME/optillm/models or ~/.cache/optillm/models)")
    add("--router-table", help="router table learned by 'optillm-eval fit-router': 'auto' (and "
                               "the router plugin) choose the approach by it")
    add("--config", help="gateway YAML: model_groups, general_settings, profiles")
    add("--cepo-config", help="YAML of cepo's defaults (cepo_* option names, prefix optional); "
                              "request fields still win (OptiLLM's --cepo_config_file; its "
                              "--cepo_<field> VALUE flags set one default each)")
    for flag, legacy, option, kind in OPTILLM_OPTION_FLAGS:
        names = [flag] + (["--best_of_n"] if option == "best_of_n" else [])
        add(*names, dest=option, type=kind,
            help=f"default {option} for requests that send none (OptiLLM's flag; also "
                 f"{legacy})")
    add("--n", type=int, help="choices per request when a request sends no n (OptiLLM's flag)")
    add("--launch-gui", action="store_const", const=True,
        help="OptiLLM's flag: the web face is always served here (/playground, /docs)")
    add("--data-dir", help="folder for what plugins persist (spl strategies, memory); default "
                           "$XDG_DATA_HOME/optillm or ~/.local/share/optillm")
    add("--config-dir", help="folder of plugin configs (mcp_config.json); default "
                             "$XDG_CONFIG_HOME/optillm or ~/.config/optillm")
    add("--allow-private-urls", help="let readurls/web_search reach private addresses: 'all' or "
                                     "comma-separated CIDRs (default: none; metadata addresses "
                                     "only when listed)")
    add("--web-search-url", help="web_search backend: a SearXNG instance or a search API URL")
    add("--web-search-api-key", help="key for the web_search API backend (never sent elsewhere)")
    add("--redis-url", help="Redis for the response cache and stored responses "
                            "(else an on-disk store under --cache-dir)")
    add("--cache-ttl", type=float, help="seconds a deterministic response stays cached; 0 turns "
                                        "the cache off (default: the config's, else off)")
    add("--cache-dir", help="folder of the embedded on-disk store")
    add("--max-body-bytes", type=int, help="largest request body accepted (413 above)")
    add("--max-parallel-calls", type=int, help="concurrent upstream calls per process")
    add("--upstream-timeout", type=float, help="seconds before an upstream call times out (504)")
    add("--upstream-retries", type=int, help="retries of a failed upstream call (no answer, 429, "
                                             "500/502/503) with backoff and jitter (default 2)")
    add("--upstream-provider", choices=["openai", "litellm"],
        help="how upstream calls are made: 'openai' (an OpenAI-compatible HTTP API, the "
             "default) or 'litellm' (litellm.completion: the model names LiteLLM's provider, "
             "e.g. anthropic/claude-3-5-haiku-latest; the 'litellm' extra)")
    add("--ssl-verify", dest="ssl_verify", action="store_const", const=True,
        help="check the upstream's TLS certificate (the default; OptiLLM's flag)")
    add("--no-ssl-verify", dest="ssl_verify", action="store_const", const=False,
        help="do not check the upstream's TLS certificate (self-signed test servers only)")
    add("--ssl-cert-path", help="CA bundle (PEM) to check the upstream's certificate against")
    add("--rate-limit", help="requests each client key may send, e.g. 60/minute (shared "
                             "through --redis-url, else per process)")
    add("--keepalive-interval", type=float, help="seconds between SSE keep-alive comments")
    add("--cors-allow-origins", help="browser origins allowed to call the proxy (CORS), "
                                     "comma-separated, or '*' (default: none, CORS off)")
    return p


def export_metrics_dir(path: str) -> None:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` for this process and the gunicorn workers it forks:
    prometheus-client reads it (and only it) when it is first imported."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def prepare_litellm_import() -> None:
    """Before ``import litellm``: LiteLLM fetches its model price list over the network when
    imported unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is set; this proxy uses the copy bundled
    with LiteLLM (a variable already set is left as it is)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
