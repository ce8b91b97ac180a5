"""``python -m optillm [flags]``: the same as the ``optillm`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
