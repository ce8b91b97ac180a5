"""GET /openapi.json and GET /docs: the document matches the app's routes both ways, validates
as OpenAPI 3.1, reuses OpenAI's schemas, and both routes open without the proxy key."""

from __future__ import annotations

import re

import pytest
import yaml

from optillm.web import docs

IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: ``/v1/x/<id>`` and ``<path:p>`` -> ``{id}``, ``{p}``."""
    return re.sub(r"<(?:[a-z]+:)?([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", rule)


def app_routes(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods - IGNORED_METHODS:
            out.add((openapi_path(rule.rule), method.lower()))
    return out


def path_item(doc: dict, path: str) -> dict:
    item = doc["paths"][path]
    ref = item.get("$ref")
    if ref:
        assert ref.startswith("#/components/pathItems/"), ref
        item = doc["components"]["pathItems"][ref.rsplit("/", 1)[1]]
    return item


def documented_routes(doc: dict) -> set[tuple[str, str]]:
    return {(path, method) for path in doc["paths"] for method in HTTP_METHODS
            if method in path_item(doc, path)}


@pytest.fixture
def keyed_app(make_app):
    return make_app(optillm_api_key="sk-proxy")


@pytest.fixture
def document(keyed_app) -> dict:
    response = keyed_app.test_client().get("/openapi.json")  # no key: the route is public
    assert response.status_code == 200 and response.content_type == "application/json"
    return response.get_json()


def test_every_route_of_the_app_is_documented(keyed_app, document):
    missing = app_routes(keyed_app) - documented_routes(document)
    assert not missing, f"routes missing from optillm/web/openapi.yaml: {sorted(missing)}"


def test_every_documented_route_exists(keyed_app, document):
    extra = documented_routes(document) - app_routes(keyed_app)
    assert not extra, f"documented but not routes of the app: {sorted(extra)}"


def test_the_checked_in_file_is_the_served_routes(document):
    with open(docs.DOCUMENT) as fh:
        source = yaml.safe_load(fh)
    assert set(source["paths"]) == set(document["paths"])
    assert document["openapi"].startswith("3.1")


def test_validates_as_openapi_3_1(document):
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate

    validate(document, cls=OpenAPIV31SpecValidator)  # raises on any error, $refs resolved


def test_reuses_openai_schemas_and_lists_approach_options(document):
    schemas = document["components"]["schemas"]
    with open(docs.OPENAI_SCHEMAS) as fh:
        vendored = yaml.safe_load(fh)["components"]["schemas"]
    # OpenAI's own definitions, not retyped: unchanged but for the 3.1 fixes
    assert set(vendored) <= set(schemas)
    for name in ("CreateChatCompletionRequest", "CreateChatCompletionResponse",
                 "CreateChatCompletionStreamResponse", "ListModelsResponse", "ErrorResponse"):
        assert schemas[name] == vendored[name], name
    changed = [n for n in vendored if schemas[n] != vendored[n]]
    assert changed and len(changed) <= 6, changed  # only where OpenAI's text breaks 3.1
    assert all(schemas[n] == docs.conform_openai_schemas(vendored[n], n) for n in changed)
    chat = path_item(document, "/v1/chat/completions")["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    refs = [part["$ref"] for part in schemas[body.rsplit("/", 1)[1]]["allOf"]]
    assert refs[0] == "#/components/schemas/CreateChatCompletionRequest"
    fields = schemas["OptillmRequestFields"]["properties"]
    assert {"optillm_approach", "max_total_tokens", "max_upstream_calls", "tts_strategy",
            "return_full_response", "cache"} <= set(fields)
    assert "tts_metadata" in schemas["OptillmChoiceFields"]["properties"]
    options = schemas["OptillmApproachOptions"]["properties"]
    assert options["bon"]["properties"]["best_of_n"] == {"type": "integer", "default": 3,
                                                        "minimum": 1, "maximum": 32}
    deepconf = options["deepconf"]["properties"]
    assert "offline" in deepconf["tts_mode"]["enum"] and deepconf["tts_warmup"]["type"] == \
        ["integer", "null"]


def test_public_routes_need_no_key_and_the_rest_still_do(keyed_app):
    client = keyed_app.test_client()
    for path in ("/openapi.json", "/docs", "/docs/redoc.standalone.js", "/playground",
                 "/playground/logs", "/playground/static/style.css", "/health"):
        assert client.get(path).status_code == 200, path
    for path in ("/v1/models", "/v1/optillm/approaches", "/v1/optillm/requests",
                 "/v1/optillm/requests/x", "/stats"):
        assert client.get(path).status_code == 401, path
    ok = client.get("/v1/optillm/approaches", headers={"Authorization": "Bearer sk-proxy"})
    assert ok.status_code == 200


def test_docs_page_is_redoc_over_the_document_with_local_files_only(client):
    page = client.get("/docs").get_data(as_text=True)
    assert '<redoc spec-url="/openapi.json"' in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith(("/", "data:")) for s in sources), sources
    bundle = client.get("/docs/redoc.standalone.js")
    assert bundle.status_code == 200 and b"Redoc" in bundle.data[:2000]
    assert bundle.content_type == "application/javascript; charset=utf-8"


def test_docs_without_redoc_is_a_clear_501(client, monkeypatch):
    monkeypatch.setattr(docs.importlib.util, "find_spec", lambda name: None)
    response = client.get("/docs")
    assert response.status_code == 501
    assert "flask-openapi3-redoc" in response.get_json()["error"]["message"]


def test_conform_fixes_only_what_breaks_3_1():
    schema = {"type": "object", "default": None, "properties": {
        "a": {"type": ["string", "null"], "default": None},
        "b": {"$recursiveRef": "#"}}, "$recursiveAnchor": True}
    assert docs.conform_openai_schemas(schema, "Tree") == {"type": "object", "properties": {
        "a": {"type": ["string", "null"], "default": None},
        "b": {"$ref": "#/components/schemas/Tree"}}}
    assert "default" in schema  # the input is left alone


def test_document_is_built_once_per_app(make_app, monkeypatch):
    app = make_app()
    client = app.test_client()
    first = client.get("/openapi.json").data
    monkeypatch.setattr(docs, "_load_yaml", lambda path: pytest.fail("loaded again"))
    assert client.get("/openapi.json").data == first


def _validator(document: dict, name: str):
    """A JSON Schema validator for ``components.schemas[name]`` of the served document
    (OpenAI's 3.0-style ``nullable`` read as a null alternative, as tests/conftest.py does)."""
    import jsonschema

    from ..conftest import _nullable

    schema = {"$ref": f"#/components/schemas/{name}",
              "components": {"schemas": _nullable(document["components"]["schemas"])}}
    return jsonschema.Draft202012Validator(schema)


def test_optillm_bodies_and_answers_match_the_documented_schemas(make_app, fake, document,
                                                                tmp_path):
    client = make_app(cache_dir=str(tmp_path / "store")).test_client()
    request = {"model": "fake", "messages": [{"role": "user", "content": "2+2?"}],
               "optillm_approach": "bon", "best_of_n": 2, "max_upstream_calls": 5,
               "cache": {"no-store": True}}
    _validator(document, "OptillmChatCompletionRequest").validate(request)
    errors = list(_validator(document, "OptillmChatCompletionRequest").iter_errors(
        {**request, "optillm_approach": 5, "max_total_tokens": 0}))
    assert {e.path[-1] for e in errors if e.path} >= {"optillm_approach", "max_total_tokens"}
    fake.default = "4"
    answer = client.post("/v1/chat/completions", json=request,
                         headers={"X-Optillm-Trace": "1", "X-Request-ID": "doc-1"}).get_json()
    assert "optillm_votes" in answer["choices"][0]
    _validator(document, "OptillmChatCompletionResponse").validate(answer)
    models = client.get("/v1/models").get_json()
    _validator(document, "ListModelsResponse").validate(models)
    approaches = client.get("/v1/optillm/approaches").get_json()
    _validator(document, "OptillmApproachList").validate(approaches)
    record = client.get("/v1/optillm/requests/doc-1").get_json()
    _validator(document, "OptillmConversationRecord").validate(record)
    assert record["provider_calls"]
