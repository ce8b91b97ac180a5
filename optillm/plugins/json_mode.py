"""``json``: structured output that validates, for ``response_format`` ``json_object`` and
``json_schema``, on the requested model (never a substitute).

The first call goes to the requested model with the client's ``response_format`` passed on
(llama-server and OpenAI enforce a JSON schema while decoding) and a system instruction that
states the schema, for upstreams that ignore the field. An upstream that refuses the field
(400 naming ``response_format``) is asked again without it. The reply's JSON is taken out of
any prose or code fence around it and checked: it must parse, and with ``json_schema`` it must
validate (``jsonschema``, the ``json`` extra). An invalid reply gets up to
``json_repair_attempts`` follow-up calls, each showing the model its reply and the exact error.
The answer is the JSON value, serialised compactly; when nothing validates the client gets a
502 (``invalid_json_output``) with the last error. A request without ``response_format`` is
treated as ``json_object``. A schema that is itself invalid is a 400; a ``json_schema``
request on a server without ``jsonschema`` is a 501 (``MissingExtraError``, ``missing_extra``).

Calls: ``1 + r`` where ``r <= json_repair_attempts`` is the number of repairs needed (``+1``
when the upstream refuses ``response_format``); all sequential. The plugin sets no sampling
parameter.

Options (request body): ``json_repair_attempts`` (int, 0-5, default 2).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequestError, MissingExtraError, UpstreamError
from ..options import opt
from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "json"
EXTRA = "json"


@dataclass(frozen=True)
class Options:
    json_repair_attempts: int = opt(2, ge=0, le=5)


def requested_schema(response_format: Any) -> dict | None:
    """The JSON schema a ``response_format`` asks for (None: any JSON object).

    Raises: BadRequestError for a malformed ``response_format``.
    """
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise BadRequestError("response_format must be an object", param="response_format")
    kind = response_format.get("type")
    if kind == "json_object":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            return None
        if not isinstance(schema, dict):
            raise BadRequestError("response_format.json_schema.schema must be an object",
                                  param="response_format")
        return schema
    raise BadRequestError(f"the json plugin needs response_format of type 'json_object' or "
                          f"'json_schema', got {kind!r}", param="response_format")


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


def extract_json(text: str) -> tuple[Any, str | None]:
    """``(value, None)`` for the first JSON value found in ``text`` (whole text, a fenced
    block, or from the first ``{``/``[``), else ``(None, error message)``."""
    text = (text or "").strip()
    candidates = [text] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    error = "the reply contains no JSON"
    for cand in candidates:
        try:
            return json.loads(cand), None
        except ValueError as exc:
            if cand[:1] in ("{", "["):
                error = f"invalid JSON: {exc}"
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(text, i)
                return value, None
            except ValueError as exc:
                error = f"invalid JSON: {exc}"
    return None, error


def _validator(schema: dict | None):
    if schema is None:
        return None
    try:
        import jsonschema
    except ImportError:
        raise MissingExtraError.for_extra(SLUG, EXTRA, "jsonschema") from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BadRequestError(f"response_format.json_schema.schema is not a valid JSON "
                              f"schema: {exc.message}", param="response_format") from None
    return cls(schema)


def check(text: str, validator) -> tuple[Any, str | None]:
    """``(value, None)`` when ``text`` holds JSON that validates, else ``(None, error)``."""
    value, error = extract_json(text)
    if error:
        return None, error
    if validator is None:
        if not isinstance(value, dict):
            return None, "the reply must be a JSON object"
        return value, None
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(root)"
        return None, f"schema validation failed at {where}: {e.message}"
    return value, None


def instruction(schema: dict | None) -> str:
    if schema is None:
        return "Reply with a single JSON object and nothing else."
    return ("Reply with a single JSON value that validates against this JSON schema, and "
            f"nothing else:\n{json.dumps(schema)}")


def _with_system(messages: list[Message], text: str) -> list[Message]:
    if messages and messages[0].role == "system":
        return [Message("system", f"{messages[0].text}\n\n{text}")] + messages[1:]
    return [Message("system", text)] + messages


def run(ctx: RunContext) -> Answer:
    fmt = ctx.params.get("response_format")
    schema = requested_schema(fmt)
    validator = _validator(schema)
    messages = _with_system(ctx.conversation(), instruction(schema))
    try:
        reply = ctx.complete(messages, answer=True).text
    except BadRequestError as exc:
        if "response_format" not in exc.message or fmt is None:
            raise
        reply = ctx.complete(messages, answer=True, response_format=None).text
        fmt = None  # the upstream does not take it; repairs go without it too
    value, error = check(reply, validator)
    attempts = 0
    while error and attempts < ctx.options.json_repair_attempts:
        attempts += 1
        messages = messages + [
            Message("assistant", reply),
            Message("user", f"That reply is not valid: {error}. Reply again with only the "
                            f"corrected JSON, no explanation.")]
        reply = ctx.complete(messages, answer=True,
                             **({} if fmt is not None else {"response_format": None})).text
        value, error = check(reply, validator)
    if error:
        raise UpstreamError(f"the model produced no valid JSON after {attempts} repair "
                            f"attempt(s): {error}", code="invalid_json_output")
    return Answer(json.dumps(value, ensure_ascii=False),
                  metadata={"optillm_json": {"repairs": attempts, "schema": schema is not None}})
