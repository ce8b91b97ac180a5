"""The plugin manager: discovers approaches and fills the registry through pluggy.

Discovery order: built-in approaches (``optillm/approaches/``), built-in plugins
(``optillm/plugins/``), the ``optillm`` entry-point group, then each ``*.py`` in
``--plugins-dir`` (sorted by name). A module may implement the hooks of ``optillm.hookspecs``
or be an OptiLLM drop-in (``SLUG`` + ``run``; see ``optillm.plan.compat``). A plugin that fails to
load stops start-up with ``PluginLoadError`` naming its path and the reason.
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
from types import ModuleType

import pluggy

from .. import hookspecs
from .compat import adapt_optillm_module
from ..hookspecs import hookimpl
from .planner import PrefixParser
from .registry import Approach, Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "optillm"


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded; the message names its path and the reason."""


class _ModuleApproaches:
    """Registers every approach module of a package (``SLUG`` + ``run(ctx)``) through the hook,
    exactly like a third-party plugin; adding an approach module edits no other file. A module
    that also implements other hooks (``parse_model`` for a model-name form) is registered
    with the plugin manager as a plugin of its own."""

    def __init__(self, package: str, pm: pluggy.PluginManager):
        self.package = package
        pkg = importlib.import_module(package)
        self.modules: list[tuple[str, ModuleType]] = []
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            name = f"{package}.{info.name}"
            try:
                module = importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001
                raise PluginLoadError(f"{name}: {type(exc).__name__}: {exc}") from exc
            self.modules.append((name, module))
            if hasattr(module, "parse_model") or hasattr(module, "register_approaches"):
                pm.register(module, name=name)

    @hookimpl
    def register_approaches(self, register):
        for name, module in self.modules:
            if hasattr(module, "register_approaches"):
                continue  # it registers its own approaches through the hook
            for approach in module_approaches(module, name):
                register(approach)


def module_approaches(module: ModuleType, source: str) -> list[Approach]:
    """The approaches a native module declares: ``APPROACH`` (or a list ``APPROACHES``) of
    ``Approach`` values, or ``SLUG`` + ``run(ctx)`` with optional ``Options`` and ``STREAMS``."""
    if hasattr(module, "APPROACHES"):
        return list(module.APPROACHES)
    if isinstance(getattr(module, "APPROACH", None), Approach):
        return [module.APPROACH]
    if hasattr(module, "SLUG") and callable(getattr(module, "run", None)):
        if len(inspect.signature(module.run).parameters) >= 4:  # OptiLLM's signature
            return [adapt_optillm_module(module, source)]
        doc = (module.__doc__ or "").strip().splitlines()
        return [Approach(slug=module.SLUG, run=module.run, options=getattr(module, "Options", None),
                         streams=bool(getattr(module, "STREAMS", False)),
                         serves_n=bool(getattr(module, "SERVES_N", False)),
                         description=doc[0] if doc else "", source=source)]
    return []


class _DropIn:
    """An OptiLLM drop-in module registered through the hook."""

    def __init__(self, approach: Approach):
        self.approach = approach

    @hookimpl
    def register_approaches(self, register):
        register(self.approach)


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


def _register_module(pm: pluggy.PluginManager, module: ModuleType, source: str) -> None:
    if hasattr(module, "register_approaches") or hasattr(module, "parse_model"):
        pm.register(module, name=source)
        return
    try:
        approach = adapt_optillm_module(module, source)
    except ValueError as exc:
        raise PluginLoadError(f"{source}: {exc}") from exc
    pm.register(_DropIn(approach), name=source)


def build_registry(plugins_dir: str | None = None,
                   entry_points: bool = True) -> tuple[pluggy.PluginManager, Registry]:
    """A plugin manager with every plugin loaded, and the registry it filled.

    Raises:
        PluginLoadError: a plugin failed to import, has the wrong shape, or registers a slug
            that is already taken.
    """
    pm = pluggy.PluginManager("optillm")
    pm.add_hookspecs(hookspecs)
    pm.register(PrefixParser(), name="optillm.plan.planner")
    pm.register(_ModuleApproaches("optillm.approaches", pm), name="optillm.approaches")
    pm.register(_ModuleApproaches("optillm.plugins", pm), name="optillm.plugins")
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001
                raise PluginLoadError(f"entry point {ep.name} ({ep.value}): "
                                      f"{type(exc).__name__}: {exc}") from exc
            _register_module(pm, module, f"entry point {ep.name}")
    if plugins_dir:
        if not os.path.isdir(plugins_dir):
            raise PluginLoadError(f"{plugins_dir}: --plugins-dir is not a directory")
        for fname in sorted(os.listdir(plugins_dir)):
            if fname.endswith(".py") and not fname.startswith("_"):
                path = os.path.join(plugins_dir, fname)
                _register_module(pm, _load_file(path), path)
    registry = Registry()

    def register(approach=None, /, **kwargs):
        try:
            return registry.register(approach, **kwargs)
        except ValueError as exc:
            raise PluginLoadError(str(exc)) from exc

    pm.hook.register_approaches(register=register)
    return pm, registry
