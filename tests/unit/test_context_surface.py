"""Approaches and plugins see only ``RunContext`` and the toolkit.

The sources of ``optillm/approaches``, ``optillm/plugins`` and the OptiLLM adapter
(``optillm/plan/compat.py``) are parsed (never imported) and must not reach past the context:
no ``ctx.upstream`` (nor ``ctx.meta`` / ``ctx.executor``), no private ``ctx._anything`` (also
through ``getattr``), no walking ``.inner`` down the upstream stack; approach modules declare
only ``SLUG`` / ``Options`` / ``run`` and no hooks (model-name forms live in
``optillm.plan.model_names``). Then the context's public surface is exercised: it holds no
upstream, and ``count_tokens`` / ``apply_template`` / ``capabilities`` / ``complete_request``
go through the stack.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from optillm.concurrency import BoundedExecutor
from optillm.errors import CapabilityError
from optillm.toolkit.context import Cancelled, RunContext
from optillm.types import ChatRequest, Message
from optillm.upstream.base import CallMeta, Capabilities

from ..fakes import FakeUpstream

PACKAGE = Path(__file__).resolve().parents[2] / "optillm"
SCANNED = sorted([*(PACKAGE / "approaches").rglob("*.py"), *(PACKAGE / "plugins").rglob("*.py"),
                  PACKAGE / "plan" / "compat.py"])
#: Attributes of the context an algorithm must not touch (removed from its surface).
HIDDEN = {"upstream", "meta", "executor"}
HOOK_NAMES = {"parse_model", "register_approaches"}


def context_names(tree: ast.AST) -> set[str]:
    """``ctx`` plus every parameter annotated ``RunContext`` in the module."""
    names = {"ctx"}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.annotation is not None and "RunContext" in ast.unparse(arg.annotation):
                    names.add(arg.arg)
    return names


def violations(source: str, label: str) -> list[str]:
    """Every reach past the context in ``source`` (a module's text), as ``label:line: what``."""
    tree = ast.parse(source, label)
    ctx = context_names(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{label}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute):
            if node.attr == "inner":
                found.append(f"{where}: .inner (walks the upstream stack)")
            elif isinstance(node.value, ast.Name) and node.value.id in ctx and (
                    node.attr in HIDDEN or node.attr.startswith("_")):
                found.append(f"{where}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2:
            target, name = node.args[0], node.args[1]
            if isinstance(target, ast.Name) and target.id in ctx \
                    and isinstance(name, ast.Constant) and isinstance(name.value, str) \
                    and (name.value in HIDDEN or name.value.startswith("_")):
                found.append(f"{where}: {node.func.id}({target.id}, {name.value!r})")
            elif isinstance(name, ast.Constant) and name.value == "inner":
                found.append(f"{where}: {node.func.id}(..., 'inner')")
    return found


def test_the_scan_covers_the_algorithms():
    names = {p.name for p in SCANNED}
    assert {"wait.py", "deepconf.py", "council.py", "compact.py", "compat.py"} <= names
    assert len(SCANNED) > 30


@pytest.mark.parametrize("source, expected", [
    ("def run(ctx):\n    return ctx.upstream.complete(1)\n", "ctx.upstream"),
    ("def run(ctx):\n    ctx._check()\n", "ctx._check"),
    ("def run(c: RunContext):\n    return c.meta\n", "c.meta"),
    ("def run(ctx):\n    return getattr(ctx, '_wiring')\n", "getattr(ctx, '_wiring')"),
    ("def f(up):\n    return up.inner.base_url\n", ".inner"),
])
def test_the_scan_catches_each_kind_of_reach(source, expected):
    found = violations(source, "probe.py")
    assert len(found) == 1 and expected in found[0], found
    assert violations("def run(ctx):\n    return ctx.complete().text\n", "ok.py") == []


def test_no_approach_or_plugin_reaches_past_the_context():
    found = [v for path in SCANNED
             for v in violations(path.read_text(), str(path.relative_to(PACKAGE.parent)))]
    assert found == [], "\n".join(found)


def test_approach_modules_declare_no_hooks_and_import_no_hookspecs():
    found = []
    for path in sorted((PACKAGE / "approaches").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.name in HOOK_NAMES:
                found.append(f"{path.name}: defines {node.name}")
            if isinstance(node, ast.ImportFrom) and node.module \
                    and node.module.split(".")[-1] == "hookspecs":
                found.append(f"{path.name}: imports {node.module}")
    assert found == [], found


# -- the surface itself ---------------------------------------------------------------------------

class CountingFake(FakeUpstream):
    def __init__(self):
        super().__init__()
        self.counted: list[tuple[str, str]] = []

    def count_tokens(self, text, model, meta=None):
        self.counted.append((text, model))
        return len(text.split())

    @property
    def capabilities(self):
        return Capabilities(logprobs=False)


@pytest.fixture
def make_ctx():
    executors = []

    def build(upstream, **kwargs):
        executor = BoundedExecutor(2)
        executors.append(executor)
        request = ChatRequest("base-model", (Message("system", "be brief"),
                                             Message("user", "hi there")))
        return RunContext(request=request, upstream=upstream, executor=executor,
                          meta=CallMeta("req-1", "client-key"), **kwargs)

    yield build
    for executor in executors:
        executor.shutdown()


def test_the_context_holds_no_upstream_meta_or_executor(make_ctx):
    ctx = make_ctx(FakeUpstream())
    for name in HIDDEN:
        assert not hasattr(ctx, name), name


def test_count_tokens_goes_to_the_upstream_on_the_base_model(make_ctx):
    up = CountingFake()
    ctx = make_ctx(up)
    assert ctx.count_tokens("one two three") == 3
    assert ctx.count_tokens("a b", model="other") == 2
    assert up.counted == [("one two three", "base-model"), ("a b", "other")]
    assert ctx.calls == 0 and ctx.usage.total_tokens == 0  # counting is no generation


def test_count_tokens_without_the_capability_is_a_capability_error(make_ctx):
    with pytest.raises(CapabilityError, match="cannot count tokens"):
        make_ctx(FakeUpstream()).count_tokens("text")


def test_capabilities_and_apply_template(make_ctx):
    up = CountingFake()
    ctx = make_ctx(up)
    assert ctx.capabilities.logprobs is False
    assert ctx.apply_template() == "<|system|>be brief\n<|user|>hi there\n<|assistant|>"
    assert ctx.apply_template([Message("user", "x")]) == "<|user|>x\n<|assistant|>"
    with pytest.raises(CapabilityError):
        make_ctx(FakeUpstream(chat_template=False)).apply_template()


def test_complete_request_is_checked_and_counted(make_ctx):
    up = FakeUpstream(default="two words")
    ctx = make_ctx(up)
    completion = ctx.complete_request(ctx.build_request(n=1, answer=True).replace(model="m2"))
    assert completion.text == "two words" and up.history[0].model == "m2"
    assert ctx.calls == 1 and ctx.usage.completion_tokens == 2
    assert up.metas[0].api_key == "client-key"
    cancelled = threading.Event()
    cancelled.set()
    stopped = make_ctx(up, cancelled=cancelled)
    with pytest.raises(Cancelled):
        stopped.complete_request(stopped.build_request())
    with pytest.raises(Cancelled):
        stopped.apply_template()
    assert len(up.history) == 1
