"""CORS: off by default; --cors-allow-origins / OPTILLM_CORS_ALLOW_ORIGINS lists the origins
(flask-cors); only those get Access-Control-Allow-Origin; a preflight is answered without the
proxy key, while the actual request still needs it."""

from __future__ import annotations

import pytest

from optillm.settings import Settings

ALLOWED = "http://app.example"
OTHER = "http://evil.example"
KEY = "sk-proxy"


def preflight(client, origin, path="/v1/chat/completions"):
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-request-id"})


def post(client, origin, key=KEY):
    headers = {"Origin": origin}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return client.post("/v1/chat/completions", headers=headers,
                       json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})


def test_off_by_default_no_cors_headers(make_app):
    client = make_app(optillm_api_key=KEY).test_client()
    response = post(client, ALLOWED)
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    response = preflight(client, ALLOWED)
    assert "Access-Control-Allow-Origin" not in response.headers


def test_allowed_origin_gets_the_header_and_can_read_ours(make_app):
    client = make_app(optillm_api_key=KEY, cors_allow_origins=f"{ALLOWED}, http://b.example"
                      ).test_client()
    response = post(client, ALLOWED)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = response.headers["Access-Control-Expose-Headers"].lower()
    assert "x-request-id" in exposed and "x-optillm-upstream-calls" in exposed
    assert "Origin" in response.headers.get("Vary", "")
    other = post(client, "http://b.example")
    assert other.headers["Access-Control-Allow-Origin"] == "http://b.example"


def test_disallowed_origin_gets_no_header(make_app):
    client = make_app(cors_allow_origins=ALLOWED).test_client()
    response = post(client, OTHER, key=None)
    assert response.status_code == 200  # CORS is the browser's check; the server still answers
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Origin" not in preflight(client, OTHER).headers
    assert "Access-Control-Allow-Origin" not in post(client, "", key=None).headers


def test_preflight_needs_no_proxy_key_but_the_request_does(make_app):
    client = make_app(optillm_api_key=KEY, cors_allow_origins=ALLOWED).test_client()
    response = preflight(client, ALLOWED)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    for path in ("/v1/models", "/v1/optillm/requests/x", "/v1/messages"):
        assert preflight(client, ALLOWED, path).status_code == 200, path
    denied = post(client, ALLOWED, key="wrong")
    assert denied.status_code == 401  # CORS opens nothing: the key is still checked
    assert denied.headers["Access-Control-Allow-Origin"] == ALLOWED  # the page can read why
    assert post(client, ALLOWED).status_code == 200


def test_any_origin_with_star(make_app):
    client = make_app(cors_allow_origins="*").test_client()
    response = post(client, OTHER, key=None)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("argv, env, expected", [
    ([], {}, []),
    (["--cors-allow-origins", "http://a.example,http://b.example/"], {},
     ["http://a.example", "http://b.example"]),
    ([], {"OPTILLM_CORS_ALLOW_ORIGINS": "*"}, ["*"]),
    (["--cors-allow-origins", "http://flag.example"], {"OPTILLM_CORS_ALLOW_ORIGINS": "*"},
     ["http://flag.example"]),
])
def test_flag_and_variable(argv, env, expected):
    assert Settings.from_args(argv, env).cors_origins == expected
