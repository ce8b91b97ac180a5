"""OpenAI's Responses API over any approach: ``POST /v1/responses``, ``GET`` and ``DELETE
/v1/responses/<id>``.

- ``mapping``: a ``/v1/responses`` body as the chat request it runs as, and a finished
  ``Completion`` as the ``Response`` object;
- ``store``: the stored responses and conversations that ``previous_response_id`` continues;
- ``events``: the streaming events (an encoder over the shared engine, ``optillm.web.runner``);
- ``routes``: the Flask blueprint ``bp``.
"""

from __future__ import annotations

from .routes import bp
from .store import KEY_PREFIX, RESPONSE_TTL, StoreUnavailable

__all__ = ["KEY_PREFIX", "RESPONSE_TTL", "StoreUnavailable", "bp"]
