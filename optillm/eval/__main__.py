"""``python -m optillm.eval``: the same as ``optillm-eval``."""

from .cli import main

raise SystemExit(main())
