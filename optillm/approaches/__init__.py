"""Built-in approaches, one module per slug.

Each module declares ``SLUG``, ``run(ctx: RunContext) -> Answer | str | Completion``, and
optionally ``Options`` (a dataclass of per-request options read from the request body) and
``STREAMS = True`` (its final call is made with ``final=True`` and returned unchanged) and
``SERVES_N = True`` (it answers all ``n`` choices itself; else it runs once per choice). The
plugin manager registers every module here through the ``register_approaches`` hook, so adding
an approach edits no existing file.
"""
