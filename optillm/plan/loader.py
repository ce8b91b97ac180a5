"""The plugin manager: discovers approaches and fills the registry through pluggy.

Discovery order: built-in approaches (``optillm/approaches/``), built-in plugins
(``optillm/plugins/``), the ``optillm`` entry-point group, then each ``*.py`` in
``--plugins-dir`` (sorted by name; names starting with ``_`` are skipped, as are such modules
of the built-in packages). Every module is classified once, here, by ``classify``:

- ``NATIVE``: ``SLUG`` + ``run(ctx)`` (the form ``optillm/approaches/__init__.py`` documents,
  with optional ``Options``, ``STREAMS``, ``SERVES_N``), or ``APPROACH`` / ``APPROACHES``
  holding ``Approach`` values;
- ``HOOKS``: a module implementing hooks of ``optillm.hookspecs`` (``register_approaches``,
  ``parse_model``), registered with the plugin manager as it is; without
  ``register_approaches`` it may also declare one approach in the native short form;
- ``OPTILLM``: OptiLLM's ``SLUG`` + ``run(system_prompt, initial_query, client, model[,
  request_config])``, adapted by ``optillm.plan.compat``.

Which ``run`` form a module has is read from ``inspect.signature(run)``: one positional
argument is ``run(ctx)``, four (or five, or ``*args``) OptiLLM's; a first parameter named
``ctx`` decides a signature that fits both. A module that fits none, or fails to import, stops
start-up with ``PluginLoadError`` naming its path and the reason, before any request.

The plan layer's own model-name forms (``optillm.plan.model_names``) and the prefix parser
(``optillm.plan.planner.PrefixParser``) are registered here too.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import pkgutil
import sys
from dataclasses import dataclass
from types import ModuleType

import pluggy

from .. import hookspecs
from ..hookspecs import hookimpl
from . import model_names
from .compat import adapt_optillm_module
from .planner import PrefixParser
from .registry import Approach, Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "optillm"
NATIVE, HOOKS, OPTILLM = "native", "hooks", "optillm"
#: The hook names a hook module implements (every hookspec of ``optillm.hookspecs``).
HOOK_NAMES = tuple(name for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
                   if hasattr(f, "optillm_spec"))
_OPTILLM_FORM = "run(system_prompt, initial_query, client, model[, request_config])"


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded; the message names its path and the reason."""


@dataclass(frozen=True)
class Classified:
    """A module as loaded: its ``kind`` (``NATIVE``, ``HOOKS``, ``OPTILLM``), where it came
    from (``source``: a path, a module name or ``entry point <name>``) and the approaches it
    declares directly (a hook module's own ``register_approaches`` adds more)."""

    module: ModuleType
    source: str
    kind: str
    approaches: tuple[Approach, ...] = ()


class _Declared:
    """Registers approaches declared by modules (not through their own hook)."""

    def __init__(self, approaches: list[Approach]):
        self.approaches = approaches

    @hookimpl
    def register_approaches(self, register):
        for approach in self.approaches:
            register(approach)


def run_form(run, source: str) -> str:
    """``NATIVE`` for ``run(ctx)``, ``OPTILLM`` for OptiLLM's signature.

    Raises: PluginLoadError naming ``source`` when the signature fits neither.
    """
    try:
        params = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError) as exc:
        raise PluginLoadError(f"{source}: run has no readable signature ({exc})") from exc
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(1 for p in positional if p.default is p.empty)
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    keyword_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]

    def fits(n: int) -> bool:
        return not keyword_only and required <= n and (variadic or n <= len(positional))

    if fits(1) and (not fits(4) or (positional and positional[0].name == "ctx")):
        return NATIVE
    if fits(4) or fits(5):
        return OPTILLM
    signature = f"run{inspect.signature(run)}"
    raise PluginLoadError(f"{source}: {signature} fits neither run(ctx) (a native approach) "
                          f"nor OptiLLM's {_OPTILLM_FORM}")


def _short_form(module: ModuleType, source: str) -> tuple[str, Approach]:
    """The approach of a module with ``SLUG`` + ``run``, and its form.

    Raises: PluginLoadError for a missing or empty ``SLUG``, a missing ``run`` or a
    signature that fits no form.
    """
    slug = getattr(module, "SLUG", None)
    run = getattr(module, "run", None)
    if not isinstance(slug, str) or not slug.strip():
        raise PluginLoadError(f"{source}: has run() but no SLUG (a non-empty string naming "
                              f"the approach)" if callable(run) else
                              f"{source}: SLUG must be a non-empty string, got {slug!r}")
    if not callable(run):
        raise PluginLoadError(f"{source}: has SLUG {slug!r} but no run() function")
    if run_form(run, source) == OPTILLM:
        return OPTILLM, adapt_optillm_module(module, source)
    doc = (module.__doc__ or "").strip().splitlines()
    return NATIVE, Approach(slug=slug, run=run, options=getattr(module, "Options", None),
                            streams=bool(getattr(module, "STREAMS", False)),
                            serves_n=bool(getattr(module, "SERVES_N", False)),
                            description=doc[0] if doc else "", source=source)


def classify(module: ModuleType, source: str) -> Classified:
    """Decide, once, what kind of plugin ``module`` is (see the module docstring).

    Raises: PluginLoadError naming ``source`` and the reason when it fits no form.
    """
    hooks = [name for name in HOOK_NAMES if callable(getattr(module, name, None))]
    has_short = hasattr(module, "SLUG") or callable(getattr(module, "run", None))
    if hooks:
        if "register_approaches" in hooks or not has_short:
            return Classified(module, source, HOOKS)
        return Classified(module, source, HOOKS, (_short_form(module, source)[1],))
    declared = getattr(module, "APPROACHES", None)
    if declared is None and hasattr(module, "APPROACH"):
        declared = [module.APPROACH]
    if declared is not None:
        approaches = tuple(declared) if isinstance(declared, (list, tuple)) else ()
        if not approaches or not all(isinstance(a, Approach) for a in approaches):
            raise PluginLoadError(f"{source}: APPROACH/APPROACHES must hold Approach values")
        return Classified(module, source, NATIVE, approaches)
    if not has_short:
        raise PluginLoadError(f"{source}: declares no approach: expected SLUG + run(ctx), "
                              f"OptiLLM's SLUG + {_OPTILLM_FORM}, or a hook of "
                              f"optillm.hookspecs ({', '.join(HOOK_NAMES)})")
    kind, approach = _short_form(module, source)
    return Classified(module, source, kind, (approach,))


def _package_modules(package: str) -> list[Classified]:
    """Every module of a built-in package, classified (``_``-prefixed ones skipped)."""
    pkg = importlib.import_module(package)
    out = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            raise PluginLoadError(f"{name}: {type(exc).__name__}: {exc}") from exc
        out.append(classify(module, name))
    return out


def _load_file(path: str) -> ModuleType:
    name = "optillm_plugin_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"{path}: not a loadable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001
        sys.modules.pop(name, None)
        raise PluginLoadError(f"{path}: {type(exc).__name__}: {exc}") from exc
    return module


def _register(pm: pluggy.PluginManager, loaded: Classified) -> None:
    if loaded.kind == HOOKS:
        pm.register(loaded.module, name=loaded.source)
    if loaded.approaches:
        name = loaded.source if loaded.kind != HOOKS else f"{loaded.source} (SLUG)"
        pm.register(_Declared(list(loaded.approaches)), name=name)
    log.debug("plugin %s: %s", loaded.source, loaded.kind)


def build_registry(plugins_dir: str | None = None,
                   entry_points: bool = True) -> tuple[pluggy.PluginManager, Registry]:
    """A plugin manager with every plugin loaded, and the registry it filled.

    Raises:
        PluginLoadError: a plugin failed to import, fits no plugin form, or registers a slug
            that is already taken.
    """
    pm = pluggy.PluginManager("optillm")
    pm.add_hookspecs(hookspecs)
    pm.register(PrefixParser(), name="optillm.plan.planner")
    pm.register(model_names, name="optillm.plan.model_names")
    for package in ("optillm.approaches", "optillm.plugins"):
        modules = _package_modules(package)
        for loaded in modules:
            if loaded.kind == HOOKS:
                pm.register(loaded.module, name=loaded.source)
        pm.register(_Declared([a for m in modules for a in m.approaches]), name=package)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001
                raise PluginLoadError(f"entry point {ep.name} ({ep.value}): "
                                      f"{type(exc).__name__}: {exc}") from exc
            _register(pm, classify(module, f"entry point {ep.name}"))
    if plugins_dir:
        if not os.path.isdir(plugins_dir):
            raise PluginLoadError(f"{plugins_dir}: --plugins-dir is not a directory")
        for fname in sorted(os.listdir(plugins_dir)):
            if fname.endswith(".py") and not fname.startswith("_"):
                path = os.path.join(plugins_dir, fname)
                _register(pm, classify(_load_file(path), path))
    registry = Registry()

    def register(approach=None, /, **kwargs):
        try:
            return registry.register(approach, **kwargs)
        except ValueError as exc:
            raise PluginLoadError(str(exc)) from exc

    pm.hook.register_approaches(register=register)
    return pm, registry
