"""The ``optillm`` command: start the proxy (development server, or gunicorn with --workers).

``optillm [flags]`` and ``python -m optillm [flags]`` are the same. Every flag also reads
``OPTILLM_<FLAG>``. Without ``--base-url`` (or Azure settings) the embedded local model starts
with the proxy and stops with it; with ``--workers N`` the gunicorn master holds it and the N
gthread workers share it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from .upstream.local_model import LocalModel, LocalModelUnavailable
from .settings import Settings

log = logging.getLogger("optillm")


def _run_gunicorn(settings: Settings) -> None:
    from gunicorn.app.base import BaseApplication

    from .app import create_app

    class _App(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", max(4, settings.max_parallel_calls))
            self.cfg.set("timeout", int(settings.upstream_timeout) + 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("loglevel", settings.log)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 23 shares ~/.gunicorn/gunicorn.ctl between instances, and one
                # instance's start or exit removes another's socket
                self.cfg.set("control_socket_disable", True)

        def load(self):
            return create_app(settings)

    _App().run()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and serve until interrupted. Returns the process exit code."""
    settings = Settings.from_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=settings.log.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    local = None
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
            local = LocalModel(settings.local_model, settings.local_slots,
                               settings.local_ctx_size)
            base_url = local.acquire()
            settings = settings.replace(base_url=base_url, model=settings.model or local.alias)
        upstream = settings.base_url or settings.azure_api_base or \
            f"the model groups of {settings.config}"
        print(f"optillm: listening on http://{settings.host}:{settings.port}/v1 "
              f"(upstream {upstream}, approach {settings.approach}"
              f"{f', {settings.workers} workers' if settings.workers else ''})", flush=True)
        if settings.workers > 0:
            _run_gunicorn(settings)
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
        from .upstream.config import ConfigError
        from .upstream.store import StoreError
        from .plan.loader import PluginLoadError

        if isinstance(exc, (PluginLoadError, ConfigError, StoreError, OSError)):
            print(f"optillm: error: {exc}", file=sys.stderr)
            return 1
        raise
    finally:
        if local is not None:
            local.release()
    return 0
