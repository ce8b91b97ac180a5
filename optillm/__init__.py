"""optillm: an OpenAI-compatible optimizing inference proxy.

Public names: ``create_app`` (the one constructor), ``Settings``, the typed values
(``ChatRequest``, ``Message``, ``Completion``, ``Choice``, ``Usage``), the approach API
(``RunContext``, ``Answer``, ``Approach``, ``hookimpl``, ``opt`` for bounded options) and
the error types. Importing the package is cheap: modules load on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_app": "optillm.app",
    "Settings": "optillm.settings",
    "ChatRequest": "optillm.types", "Message": "optillm.types", "Completion": "optillm.types",
    "Choice": "optillm.types", "Usage": "optillm.types", "Chunk": "optillm.types",
    "RunContext": "optillm.toolkit.context", "Answer": "optillm.toolkit.context",
    "Budget": "optillm.toolkit.context", "BudgetExhausted": "optillm.toolkit.context",
    "Approach": "optillm.plan.registry", "Registry": "optillm.plan.registry",
    "hookimpl": "optillm.hookspecs", "opt": "optillm.options",
    "OptillmError": "optillm.errors", "BadRequestError": "optillm.errors",
    "NotFoundError": "optillm.errors", "UpstreamError": "optillm.errors",
    "UpstreamTimeoutError": "optillm.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'optillm' has no attribute {name!r}")
