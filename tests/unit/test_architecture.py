"""The layering README.md's "Where things live" promises, checked on the import graph.

Every module of ``optillm`` is parsed (never imported); its imports, relative ones resolved,
must respect the layer rules below, and only ``optillm/settings.py`` may read the environment.
A new module lands in a layer by its folder, so the rules cover it without edits here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "optillm"

#: Per layer (folder or module under optillm/), the optillm modules and the outside packages it
#: must never import. Prefixes: "optillm.web" covers optillm.web.chat too.
FORBIDDEN = {
    "approaches": ("optillm.web", "optillm.plan", "optillm.app", "optillm.cli",
                   "optillm.upstream", "optillm.eval", "optillm.integrations",
                   "flask", "werkzeug", "openai", "litellm", "anthropic", "urllib3",
                   "requests", "httpx"),
    "toolkit": ("optillm.web", "optillm.plan", "optillm.app", "optillm.cli",
                "optillm.approaches", "optillm.plugins", "optillm.eval",
                "optillm.integrations", "optillm.upstream.openai_client",
                "optillm.upstream.router", "flask", "werkzeug", "openai", "litellm"),
    "upstream": ("optillm.web", "optillm.plan", "optillm.app", "optillm.cli",
                 "optillm.approaches", "optillm.plugins", "optillm.toolkit", "optillm.eval",
                 "optillm.integrations", "flask", "werkzeug"),
    "plan": ("optillm.web", "optillm.app", "optillm.cli", "optillm.eval", "flask",
             "werkzeug"),
    "base": ("optillm.web", "optillm.plan", "optillm.app", "optillm.cli",
             "optillm.approaches", "optillm.plugins", "optillm.toolkit", "optillm.upstream",
             "optillm.eval", "optillm.integrations", "flask", "werkzeug"),
}
FORBIDDEN["plugins"] = FORBIDDEN["approaches"]
#: The plain modules every layer may use.
BASE = {"types", "errors", "settings", "hookspecs", "concurrency", "options", "__init__"}
#: Flask may be imported only by these (the face and the constructor that builds the app).
FLASK_ALLOWED = ("web", "app")


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join(parts)


def layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) > 1:
        return rel.parts[0]
    return "base" if rel.stem in BASE else rel.stem


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from optillm import web`` imports optillm.web
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return found


def _hits(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


ALL = list(modules())


@pytest.mark.parametrize("path,module", ALL, ids=[m for _, m in ALL])
def test_imports_respect_the_layers(path, module):
    where = layer(path)
    forbidden = FORBIDDEN.get(where, ())
    bad = [f"{path.name}:{line} imports {name}" for line, name in imports(path, module)
           if _hits(name, forbidden) and not name.startswith(module)]
    if where not in FLASK_ALLOWED:
        bad += [f"{path.name}:{line} imports {name} (Flask lives only in optillm/web)"
                for line, name in imports(path, module) if _hits(name, ("flask", "werkzeug"))]
    assert not bad, f"{module} ({where} layer): " + "; ".join(sorted(set(bad)))


@pytest.mark.parametrize("path,module", ALL, ids=[m for _, m in ALL])
def test_only_settings_reads_the_environment(path, module):
    if module == "optillm.settings":
        return
    tree = ast.parse(path.read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            bad.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ("environ", "getenv") for a in node.names):
            bad.append(node.lineno)
    assert not bad, f"{module} reads the environment at lines {bad}; go through Settings"


def test_the_checker_catches_a_violation(tmp_path):
    """The rules above are not vacuous: a file that breaks them is caught."""
    pkg = tmp_path / "optillm" / "approaches"
    pkg.mkdir(parents=True)
    bad = pkg / "sneaky.py"
    bad.write_text("import os\nfrom ..web.chat import bp\nfrom ..plan import planner\n"
                   "KEY = os.environ.get('X')\n")
    found = [name for _, name in imports(bad, "optillm.approaches.sneaky")]
    assert "optillm.web.chat" in found and "optillm.plan.planner" in found
    assert _hits("optillm.web.chat", FORBIDDEN["approaches"])
    assert _hits("optillm.plan.planner", FORBIDDEN["approaches"])
    assert not _hits("optillm.toolkit.context", FORBIDDEN["approaches"])
