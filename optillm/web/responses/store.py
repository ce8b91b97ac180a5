"""Stored responses: the conversations ``previous_response_id`` continues.

They live in the app's shared store (``Services.store``: Redis, else the on-disk store), so any
worker or instance can continue them: under ``responses:<id>`` the response object and the
full message list (without the instructions), kept ``RESPONSE_TTL`` seconds. ``store: false``
keeps nothing. A store that cannot be reached is a 503 (``StoreUnavailable``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ...errors import NotFoundError, OptillmError
from ...types import Completion, Message

log = logging.getLogger(__name__)

#: Seconds a stored response and its conversation are kept (OpenAI keeps them 30 days).
RESPONSE_TTL = 30 * 24 * 3600.0
KEY_PREFIX = "responses:"


class StoreUnavailable(OptillmError):
    status = 503
    type = "server_error"
    code = "store_unavailable"


def _store_call(store, method: str, *args: Any) -> Any:
    """``store.<method>(*args)``, its failures as ``StoreUnavailable``."""
    from ...upstream.store import StoreError

    if store is None:
        raise StoreUnavailable("this proxy has no store for responses")
    try:
        return getattr(store, method)(*args)
    except StoreError as exc:
        raise StoreUnavailable(f"the response store is unavailable: {exc}") from exc


def load(store, response_id: str, param: str | None = None) -> dict[str, Any]:
    """The stored ``{"response": {...}, "conversation": [message dicts]}`` of ``response_id``
    (``store``: the app's ``LazyStore``).

    Raises: NotFoundError (unknown, expired or deleted); StoreUnavailable.
    """
    data = _store_call(store, "get", KEY_PREFIX + response_id)
    if data is None:
        raise NotFoundError(f"response with id {response_id!r} not found", param=param,
                            code="previous_response_not_found" if param else "not_found")
    return json.loads(data)


def save(store, response: dict[str, Any], conversation: list[Message]) -> None:
    """Keep ``response`` and the conversation that produced it (answer included) for
    ``RESPONSE_TTL`` seconds. Raises: StoreUnavailable."""
    record = {"response": response, "conversation": [m.to_dict() for m in conversation]}
    data = json.dumps(record, ensure_ascii=False).encode()
    _store_call(store, "set", KEY_PREFIX + response["id"], data, RESPONSE_TTL)


def delete(store, response_id: str) -> None:
    """Remove a stored response. Raises: NotFoundError (unknown); StoreUnavailable."""
    load(store, response_id)
    _store_call(store, "delete", KEY_PREFIX + response_id)


def keep(store, wanted: bool, response: dict[str, Any], conversation: list[Message],
         completion: Completion) -> None:
    """Store a finished response when the request asks for it (``wanted``: its ``store``);
    a store failure is logged, never turned into a failed answer (the tokens are spent, the
    answer is good)."""
    if not wanted:
        return
    try:
        save(store, response, conversation + [Message("assistant", completion.text)])
    except OptillmError as exc:
        log.warning("response %s not stored: %s", response["id"], exc.message)
