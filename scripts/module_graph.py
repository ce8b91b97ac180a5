"""Print optillm's import graph between its parts as a Mermaid diagram (docs/architecture.md).

``python scripts/module_graph.py`` reads the working tree; ``--rev REV`` reads a commit
(``git show``), so the layout before and after a change can be drawn side by side. A part is
a sub-package of ``optillm`` (``web``, ``plan``, ``toolkit``, ``upstream``, ...) or, for the
flat modules, the module itself; ``--flat`` keeps every module of the package's top level as
its own node. Edges carry the number of import statements; tests are left out.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sources(rev: str | None) -> dict[str, str]:
    """``{path: text}`` of every ``optillm/**.py`` at ``rev`` (None: the working tree)."""
    if rev is None:
        return {str(p.relative_to(ROOT)): p.read_text()
                for p in sorted((ROOT / "optillm").rglob("*.py"))}
    names = subprocess.check_output(["git", "ls-tree", "-r", "--name-only", rev, "optillm"],
                                    cwd=ROOT, text=True).split()
    return {n: subprocess.check_output(["git", "show", f"{rev}:{n}"], cwd=ROOT, text=True)
            for n in names if n.endswith(".py")}


def module_name(path: str) -> str:
    parts = path[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "optillm"


def edges(files: dict[str, str]) -> Counter:
    """``{(from part, to part): count}`` of the imports between parts."""
    known = {module_name(p) for p in files}
    found: Counter = Counter()
    for path, text in files.items():
        module = module_name(path)
        package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(text)):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = package.split(".")
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
                targets = subs or [base]
            for target in targets:
                if target.startswith("optillm.") and part(target) != part(module):
                    found[(part(module), part(target))] += 1
    return found


def mermaid(found: Counter, title: str) -> str:
    lines = [f"%% {title}", "graph TD"]
    for (a, b), n in sorted(found.items()):
        lines.append(f"  {a} -->|{n}| {b}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a git commit (default: the working tree)")
    args = parser.parse_args(argv)
    files = sources(args.rev)
    print(mermaid(edges(files), f"optillm at {args.rev or 'the working tree'}: "
                  f"{len(files)} modules"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
