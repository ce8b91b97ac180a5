"""Plugin hooks (pluggy project name ``optillm``).

Built-in approaches and plugins implement these exactly like third-party packages and files
dropped into ``--plugins-dir``; ``tests/test_plugins.py`` checks every hookspec is documented.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("optillm")
hookimpl = pluggy.HookimplMarker("optillm")


@hookspec
def register_approaches(register):
    """Register approaches.

    Call ``register(approach)`` with an ``optillm.plan.registry.Approach`` for each one, or
    ``register(run, slug=..., options=..., streams=...)`` as a shorthand. Registering a slug
    that is already taken stops start-up with both sources named.
    """


@hookspec(firstresult=True)
def parse_model(model, registry):
    """Turn a model string into a ``Plan`` (``optillm.types.Plan``), or return None to pass.

    The first non-None answer wins. The built-in prefix parser (``moa-gpt-4o``, ``moa&re2-x``,
    ``bon|moa-x``) runs last (``trylast``), so plugins can add forms such as ``x-wait-6``.
    Raise ``optillm.errors.NotFoundError`` for a form you own that names an unknown approach.
    """
