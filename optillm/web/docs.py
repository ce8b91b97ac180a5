"""``GET /openapi.json`` (optillm's OpenAPI 3.1 document) and ``GET /docs`` (Redoc over it).

The document has one source: ``optillm/web/openapi.yaml``, checked in beside this module and
tested against the app's routes (every route documented, every documented path a route:
``tests/unit/test_openapi_doc.py``). ``build_document(app)`` adds, once per app (cached in
``app.extensions``):

- OpenAI's schemas from ``vendor/openai-schemas.yaml`` (a vendored subset of OpenAI's published
  OpenAPI description, MIT licence beside it), so ``CreateChatCompletionRequest`` and its kin
  are OpenAI's own rather than retyped; the YAML's own schemas win on a name clash. Four spots
  of OpenAI's text break strict 3.1 validation; ``conform_openai_schemas`` fixes just those;
- the server's version (``info.version``);
- ``OptillmApproachOptions``: one JSON Schema per registered approach, built from its
  ``Options`` dataclass (``approach_options_schema``), so plugins' options appear too.

The docs page is Redoc (reads OpenAPI 3.1) from the file flask-openapi3-redoc ships (MIT),
served by the proxy itself: no CDN, the docs work offline. (Swagger UI 5 was tried first: its
OpenAPI 3.1 parser took over a minute on this document's ~380 schemas in headless Chromium
here, Redoc about 6 s under the same load.) Both routes, and every view marked with
``public``, open without the proxy key (``optillm.web.chat._authenticate`` reads the mark).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import threading
import types
import typing
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, send_from_directory

from .. import __version__
from ..errors import OptillmError
from ..options import spec

bp = Blueprint("optillm_docs", __name__)

HERE = os.path.dirname(os.path.abspath(__file__))
#: The checked-in document (routes, optillm's schemas).
DOCUMENT = os.path.join(HERE, "openapi.yaml")
#: The vendored subset of OpenAI's description whose schemas the document reuses.
OPENAI_SCHEMAS = os.path.join(HERE, "vendor", "openai-schemas.yaml")
_EXTENSION = "optillm.openapi"
#: Redoc's bundle inside the flask-openapi3-redoc package.
REDOC_FILE = ("templates", "redoc", "js", "redoc.standalone.js")


def public(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view as open without the proxy key (read by the app's authentication)."""
    view.optillm_public = True  # type: ignore[attr-defined]
    return view


def _load_yaml(path: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)


def _json_type(hint: Any) -> dict[str, Any]:
    """A JSON Schema ``type`` for a simple type hint (``int | None`` -> integer or null)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kinds: list[Any] = []
        for arg in typing.get_args(hint):
            kind = "null" if arg is type(None) else _json_type(arg).get("type")
            if isinstance(kind, list):
                kinds.extend(k for k in kind if k not in kinds)
            elif kind and kind not in kinds:
                kinds.append(kind)
        return {"type": kinds[0] if len(kinds) == 1 else kinds} if kinds else {}
    base = origin or hint
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
             tuple: "array", dict: "object"}
    return {"type": names[base]} if base in names else {}


def approach_options_schema(options: type | None) -> dict[str, Any]:
    """A JSON Schema (``type: object``) of an approach's ``Options`` dataclass: per field its
    type, default, bounds (``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``),
    choices (``enum``), aliases (``x-aliases``) and unit (``x-unit``). ``{}`` properties when
    the approach has no options."""
    out: dict[str, Any] = {"type": "object", "properties": {}}
    if options is None:
        return out
    try:
        hints = typing.get_type_hints(options)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: types left out
        hints = {}
    for f in dataclasses.fields(options):
        prop = _json_type(hints.get(f.name, Any))
        if f.default is not dataclasses.MISSING:
            try:
                json.dumps(f.default)
                prop["default"] = f.default
            except (TypeError, ValueError):
                pass
        found = spec(f)
        if found is not None:
            for key, value in (("minimum", found.ge), ("maximum", found.le),
                               ("exclusiveMinimum", found.gt), ("exclusiveMaximum", found.lt)):
                if value is not None:
                    prop[key] = value
            if found.choices is not None:
                prop["enum"] = list(found.choices) + ([None] if "null" in
                                                      (prop.get("type") or []) else [])
            if found.aliases:
                prop["x-aliases"] = list(found.aliases)
            if found.unit:
                prop["x-unit"] = found.unit
        out["properties"][f.name] = prop
    return out


def _admits_null(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds) or \
            schema.get("nullable") is True or schema.get("const", 0) is None:
        return True
    return any(isinstance(s, dict) and _admits_null(s)
               for key in ("anyOf", "oneOf") for s in schema.get(key) or ())


def conform_openai_schemas(node: Any, name: str = "") -> Any:
    """OpenAI's schemas fixed where they break OpenAPI 3.1 (JSON Schema 2020-12), nothing
    else: ``default: null`` on a schema that does not admit null is dropped, and draft
    2019-09's ``$recursiveAnchor`` / ``$recursiveRef: '#'`` become a ``$ref`` to the schema
    itself (``name``). Returns a new value; ``node`` is not changed."""
    if isinstance(node, list):
        return [conform_openai_schemas(v, name) for v in node]
    if not isinstance(node, dict):
        return node
    if node.get("$recursiveRef") == "#":
        return {"$ref": f"#/components/schemas/{name}"}
    out = {k: conform_openai_schemas(v, name) for k, v in node.items()
           if k != "$recursiveAnchor"}
    if "default" in out and out["default"] is None and not _admits_null(out):
        del out["default"]
    return out


def build_document(app: Flask) -> dict[str, Any]:
    """The served document (see the module docstring); built on first use, then cached.

    Raises: OSError or yaml.YAMLError when a packaged file is missing or broken (a packaging
    bug; the route answers 500).
    """
    cache = app.extensions.setdefault(_EXTENSION, {"lock": threading.Lock(), "doc": None})
    with cache["lock"]:
        if cache["doc"] is None:
            doc = _load_yaml(DOCUMENT)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            openai = (_load_yaml(OPENAI_SCHEMAS).get("components") or {}).get("schemas") or {}
            for name, schema in openai.items():
                schemas.setdefault(name, conform_openai_schemas(schema, name))
            doc["info"]["version"] = __version__
            registry = app.extensions["optillm"].registry
            schemas["OptillmApproachOptions"] = {
                "description": "Each approach's options, flat in the request body (or nested "
                               "under `optillm`); only the running approaches' are consumed.",
                "type": "object",
                "properties": {slug: approach_options_schema(registry.get(slug).options)
                               for slug in registry}}
            cache["doc"] = doc
            cache["json"] = json.dumps(doc, ensure_ascii=False).encode()
        return cache["doc"]


@bp.get("/openapi.json")
@public
def openapi_json() -> Response:
    build_document(current_app)
    return Response(current_app.extensions[_EXTENSION]["json"],
                    content_type="application/json")


def redoc_script() -> str:
    """The path of Redoc's standalone bundle as flask-openapi3-redoc ships it (found without
    importing that package, which would import flask-openapi3).

    Raises: OptillmError (501) naming the package when it is not installed.
    """
    spec = importlib.util.find_spec("flask_openapi3_redoc")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], *REDOC_FILE)
        if os.path.isfile(path):
            return path
    raise OptillmError("GET /docs needs flask-openapi3-redoc (Redoc's files): "
                       "pip install flask-openapi3-redoc", status=501, type="server_error",
                       code="missing_dependency")


@bp.get("/docs")
@public
def docs_page() -> Response:
    redoc_script()  # 501 up front rather than a blank page
    response = send_from_directory(os.path.join(HERE, "static"), "docs.html", max_age=0)
    response.headers["X-Content-Type-Options"] = "nosniff"
    # nothing but this server: Redoc's footer logo (a CDN image) is not fetched
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")
    return response


@bp.get("/docs/redoc.standalone.js")
@public
def redoc_js() -> Response:
    path = redoc_script()
    response = send_from_directory(os.path.dirname(path), os.path.basename(path), max_age=3600)
    response.headers["Content-Type"] = "application/javascript; charset=utf-8"
    return response


def register(app: Flask) -> None:
    """Add ``/openapi.json`` and the docs page at ``/docs``."""
    app.register_blueprint(bp)
