"""``python -m optillm.healthcheck``: exit 0 when this machine's proxy is ready, else 1.

For container health checks (the Dockerfile's ``HEALTHCHECK``): asks
``GET http://<host>:<port>/health/readiness`` with the bind address from the settings
(``OPTILLM_HOST``/``OPTILLM_PORT``; a wildcard host is asked on 127.0.0.1) and prints the
reason when the answer is not 200. ``--path /health`` checks liveness instead.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from .settings import Settings


def probe_url(settings: Settings, path: str = "/health/readiness") -> str:
    """The URL a local probe asks (the bind address, a wildcard host as 127.0.0.1)."""
    host = settings.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{path}"


def main(argv: Sequence[str] | None = None) -> int:
    """Probe once; 0 when the answer is 200, else 1 (the reason on stderr)."""
    p = argparse.ArgumentParser(prog="python -m optillm.healthcheck")
    p.add_argument("--path", default="/health/readiness")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    args = p.parse_args(argv)
    url = probe_url(Settings.from_env(), args.path)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(url, timeout=args.timeout) as resp:
            if resp.status == 200:
                return 0
            print(f"{url}: status {resp.status}", file=sys.stderr)
    except urllib.error.HTTPError as exc:
        print(f"{url}: status {exc.code}: {exc.read()[:300].decode('utf-8', 'replace')}",
              file=sys.stderr)
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
