"""The checks behind ``GET /health/readiness``: does the upstream answer, does Redis answer.

``check(services) -> (ready, checks)``; ``checks`` maps a name (``upstream``, ``group:<name>``,
``redis``) to ``{"ok": bool, "detail": str}``. An upstream answers when ``GET <base>/models``
gets any HTTP status under 500 within ``TIMEOUT`` seconds (a 401 still proves it is up; a
loading llama-server answers 503). A model group is ready when one of its endpoints answers.
Redis is checked only when a ``redis_url`` is configured (``--redis-url`` or the config's).
"""

from __future__ import annotations

from typing import Any

#: Seconds one probe may take.
TIMEOUT = 2.0


def _probe_url(base_url: str, api_key: str | None, timeout: float = TIMEOUT
               ) -> tuple[bool, str]:
    import urllib3

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/models"
    try:
        resp = urllib3.request("GET", url, headers=headers, retries=False, redirect=False,
                               timeout=urllib3.Timeout(total=timeout), preload_content=True)
    except urllib3.exceptions.HTTPError as exc:
        return False, f"{url} unreachable: {type(exc).__name__}"
    if resp.status >= 500:
        return False, f"{url} answered {resp.status}"
    return True, f"{url} answered {resp.status}"


def _upstream_checks(services: Any) -> dict[str, dict[str, Any]]:
    settings = services.settings
    checks: dict[str, dict[str, Any]] = {}
    gateway = getattr(services, "gateway", None)
    if gateway is not None and gateway.model_groups:
        for group, endpoints in gateway.model_groups.items():
            details = []
            ok = False
            for ep in endpoints:
                up, detail = _probe_url(ep.base_url, ep.api_key)
                details.append(detail)
                if up:
                    ok = True
                    break
            checks[f"group:{group}"] = {"ok": ok, "detail": "; ".join(details)}
    base = services.base_url or settings.azure_api_base
    if base and (gateway is None or not gateway.model_groups or services.base_url):
        if settings.azure_api_base and not services.base_url:
            base = settings.azure_api_base.rstrip("/") + "/openai"
            key = settings.azure_api_key
        else:
            key = settings.openai_api_key
        name = "embedded model" if services.local_model is not None else "upstream"
        up, detail = _probe_url(base, key)
        checks[name] = {"ok": up, "detail": detail}
    if not checks:
        checks["upstream"] = {"ok": False, "detail": "no upstream configured"}
    return checks


def _redis_check(services: Any) -> dict[str, Any] | None:
    store = getattr(services, "store", None)
    if store is None or not getattr(store, "redis_url", None):
        return None
    try:
        backend = store.backend  # opens (and pings) Redis on first use
        client = getattr(backend, "client", None)
        if client is not None:
            client.ping()
    except Exception as exc:  # noqa: BLE001 - StoreError, redis errors, a missing package
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "detail": "PING answered"}


def check(services: Any) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Probe what ``services`` depends on. Returns ``(every check ok, checks)``."""
    checks = _upstream_checks(services)
    redis = _redis_check(services)
    if redis is not None:
        checks["redis"] = redis
    return all(c["ok"] for c in checks.values()), checks
