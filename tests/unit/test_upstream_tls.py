"""OptiLLM's ``--ssl-verify`` / ``--no-ssl-verify`` / ``--ssl-cert-path`` against a real TLS
upstream on loopback with a self-signed certificate: the passthrough (urllib3) and the
approach calls (the SDK) both refuse it by default and accept it when told to."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from optillm.app import create_app
from optillm.settings import Settings

ANSWER = {"id": "chatcmpl-tls", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                       "message": {"role": "assistant", "content": "over TLS",
                                   "refusal": None}}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/v1", str(cert)
    server.shutdown()


def ask(app, model):
    return app.test_client().post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("model", ["m", "re2-m"], ids=["passthrough", "approach"])
def test_self_signed_upstream_is_refused_by_default(tls_upstream, tmp_path, model):
    url, _ = tls_upstream
    app = create_app(Settings(base_url=url, upstream_retries=0,
                              conversation_log_dir=str(tmp_path)))
    r = ask(app, model)
    assert r.status_code == 502, r.get_json()
    assert "certificate" in r.get_json()["error"]["message"].lower()


@pytest.mark.parametrize("model", ["m", "re2-m"], ids=["passthrough", "approach"])
@pytest.mark.parametrize("how", ["no-ssl-verify", "ssl-cert-path"])
def test_self_signed_upstream_is_accepted_when_told(tls_upstream, tmp_path, model, how):
    url, cert = tls_upstream
    tls = {"ssl_verify": False} if how == "no-ssl-verify" else {"ssl_cert_path": cert}
    app = create_app(Settings(base_url=url, upstream_retries=0,
                              conversation_log_dir=str(tmp_path), **tls))
    r = ask(app, model)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["choices"][0]["message"]["content"] == "over TLS"


def test_flags_and_variables():
    assert Settings.from_args([], {}).tls_verify is True
    assert Settings.from_args(["--no-ssl-verify"], {}).tls_verify is False
    assert Settings.from_args([], {"OPTILLM_SSL_VERIFY": "false"}).tls_verify is False
    assert Settings.from_args(["--ssl-cert-path", "/ca.pem"], {}).tls_verify == "/ca.pem"
    assert Settings.from_args(["--no-ssl-verify", "--ssl-verify"], {}).tls_verify is True
