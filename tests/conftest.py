"""Shared fixtures: a real app over a scripted fake upstream, and OpenAPI response checks."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from optillm.app import create_app
from optillm.settings import Settings

from .fakes import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
#: The vendored subset of OpenAI's OpenAPI description (scripts/vendor_openai_schemas.py).
OPENAPI = ROOT / "optillm" / "web" / "vendor" / "openai-schemas.yaml"


@pytest.fixture
def fake() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def make_app(fake, tmp_path):
    """``make_app(**settings)`` -> a Flask app over ``fake`` with those settings."""
    apps = []

    def build(upstream=None, **overrides):
        overrides.setdefault("conversation_log_dir", str(tmp_path / "logs"))
        overrides.setdefault("base_url", "http://fake.invalid/v1")
        overrides.setdefault("keepalive_interval", 0.05)
        app = create_app(Settings(**overrides), upstream=upstream or fake)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["optillm"].close()


@pytest.fixture
def client(make_app):
    return make_app().test_client()


def chat(client, model="fake-model", content="What is 2+2?", **body):
    """POST a chat completion; returns the Flask response."""
    payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return client.post("/v1/chat/completions", json=payload)


@functools.lru_cache(maxsize=1)
def _openapi_schemas() -> dict:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(OPENAPI) as fh:
        return _nullable(yaml.load(fh, Loader=loader)["components"]["schemas"])


def _nullable(node):
    """The spec still uses OpenAPI 3.0's ``nullable: true`` in places; JSON Schema spells it
    as a ``null`` alternative."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def validate_openapi(instance, schema_name: str) -> None:
    """Validate ``instance`` against ``components.schemas[schema_name]`` of OpenAI's spec.

    Raises: jsonschema.ValidationError naming what does not match.
    """
    import jsonschema

    schema = {"$ref": f"#/components/schemas/{schema_name}",
              "components": {"schemas": _openapi_schemas()}}
    jsonschema.Draft202012Validator(schema).validate(instance)


@pytest.fixture
def openapi():
    if not OPENAPI.exists():
        pytest.fail(f"the vendored OpenAI schemas are missing at {OPENAPI}")
    return validate_openapi
