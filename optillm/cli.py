"""The ``optillm`` command: serve the proxy under gunicorn (``--dev``: Flask's dev server).

``optillm [flags]`` and ``python -m optillm [flags]`` are the same. Every flag also reads
``OPTILLM_<FLAG>``. By default one gthread worker serves (``--workers N``, ``--worker-class
gevent``; ``optillm.serve``). Without ``--base-url`` (or Azure settings) the embedded local
model starts with the proxy and stops with it: the gunicorn master holds it and the workers
share it. ``--version`` prints the version.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from .settings import Settings
from .upstream.local_model import LocalModel, LocalModelUnavailable

log = logging.getLogger("optillm")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and serve until interrupted. Returns the process exit code."""
    settings = Settings.from_args(sys.argv[1:] if argv is None else argv)
    from .web.request_context import configure_logging

    configure_logging(settings.log, settings.log_format)
    local = None
    master = os.getpid()
    try:
        routed_only = False
        if settings.config:
            from .upstream.config import load_config

            config = load_config(settings.config, settings.environ)
            general = config.general
            routed_only = bool(config.model_groups)
            defaults = Settings()
            settings = settings.replace(  # the config's bind address where no flag set one
                host=general.host if general.host and settings.host == defaults.host
                else settings.host,
                port=general.port if general.port and settings.port == defaults.port
                else settings.port)
        if settings.uses_local_model and not routed_only:
            print("optillm: starting the embedded local model (llama-server)...", flush=True)
            local = LocalModel.from_settings(settings)
            base_url = local.acquire()
            settings = settings.replace(base_url=base_url, model=settings.model or local.alias)
        upstream = settings.base_url or settings.azure_api_base or \
            f"the model groups of {settings.config}"
        server = "Flask development server" if settings.dev else \
            f"gunicorn, {settings.workers} {settings.worker_class} " \
            f"worker{'s' if settings.workers > 1 else ''}"
        print(f"optillm: listening on http://{settings.host}:{settings.port}/v1 "
              f"(upstream {upstream}, approach {settings.approach}, {server})", flush=True)
        if settings.launch_gui:  # OptiLLM's Gradio flag: our web face is always there
            print(f"optillm: playground at http://{settings.host}:{settings.port}/playground",
                  flush=True)
        if not settings.dev:
            from .serve import run_gunicorn

            run_gunicorn(settings)
        else:
            from .app import create_app

            app = create_app(settings)
            logging.getLogger("werkzeug").setLevel(settings.log.upper())
            app.run(host=settings.host, port=settings.port, threaded=True)
    except LocalModelUnavailable as exc:
        print(f"optillm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - start-up failures are one line, not a trace
        from .plan.loader import PluginLoadError
        from .serve import StartupError
        from .upstream.config import ConfigError
        from .upstream.store import StoreError

        if isinstance(exc, (PluginLoadError, ConfigError, StoreError, OSError, StartupError)):
            print(f"optillm: error: {exc}", file=sys.stderr)
            return 1
        raise
    finally:
        if local is not None and os.getpid() == master:  # gunicorn's forked workers exit
            local.release()                               # through these frames too
    return 0
