"""Typer's help without the imports it never uses here: two in its renderer, and pydantic.

``typer.rich_utils`` (imported for every ``--help`` and usage error) imports
``rich.markdown`` (markdown-it, for ``rich_markup_mode="markdown"``) and
``rich.traceback`` (rich.pretty, attrs and pygments, for pretty exceptions) at the top —
about half of ``canvascast --help``'s start-up, for features this CLI turns off (its markup
mode is "rich", pretty exceptions are disabled). ``install()`` puts a finder on
``sys.meta_path`` that, while ``typer.rich_utils`` itself is being executed, lets those two
names resolve to stand-ins that import the real class on first use. Outside that moment
nothing changes: the stand-in modules are removed as soon as ``typer.rich_utils`` is
loaded, so any later ``import rich.markdown`` gets the real module, and a stand-in that is
ever called (markdown help, a pretty traceback) imports the real class then.

Typer coerces each parameter's value through a pydantic TypeAdapter, built the first time
the parameter is processed — even for a value that was not given (None), which needs no
adapter: typer's coercion passes None through (or () for a multi-value parameter) before
it would use one. So ``canvascast render --help`` (the root's options, none given) imported
pydantic (about 100 modules, more than ``import typer, rich``) only to pass Nones along.
``install()`` also wraps typer's ``process_value`` so that a missing value is coerced by
typer's own code without the adapter being built; any given value builds it as before.

Tests check that ``--help`` imports none of them and renders the same.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.abc import Loader

TARGET = "typer.rich_utils"
DEFERRED = {"rich.markdown": ("Markdown",), "rich.traceback": ("Traceback",)}


class _DeferredType(type):
    """The stand-ins' metaclass: a class attribute (``Traceback.from_exception``) is the
    real class's, imported then."""

    _where: tuple[str, str]

    def _real(cls) -> Any:
        module, name = cls._where
        return getattr(importlib.import_module(module), name)

    def __getattr__(cls, attribute: str) -> Any:
        return getattr(cls._real(), attribute)


def _deferred(module: str, name: str) -> type:
    """A class standing in for ``module.name`` (a class, so annotations such as
    ``Markdown | Text`` still evaluate): calling it makes an instance of the real class."""

    def __new__(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    return _DeferredType(name, (), {"_where": (module, name), "__new__": __new__,
                                    "__module__": __name__})


# The finder and loader are plain classes: importlib.abc would import importlib.resources
# (tempfile, random, ...) for nothing.
class _Loader:
    def __init__(self, real: Loader) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        stand_ins = {}
        for name, attributes in DEFERRED.items():
            if name in sys.modules:
                continue  # the real one is here already: nothing to spare
            stand_in = types.ModuleType(name, "canvascast: deferred until used")
            for attribute in attributes:
                setattr(stand_in, attribute, _deferred(name, attribute))
            stand_ins[name] = stand_in
        sys.modules.update(stand_ins)
        try:
            self.real.exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


class _Finder:
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)  # type: ignore[assignment] # duck-typed Loader
        return spec


def install() -> None:
    """Both, once per process (again: a no-op); the renderer's part only if typer.rich_utils
    is not imported yet."""
    _coerce_missing_values_without_pydantic()
    if TARGET in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())


class _NoAdapter:
    """A parameter's coercion while its value is missing: typer's own ``coerce``, which
    returns before it would use the adapter (an AttributeError here if it ever did not)."""

    def coerce(self, value: None, param: Any, ctx: Any) -> Any:
        from typer._coercion import RuntimeParam

        return RuntimeParam.coerce(self, value, param=param, ctx=ctx)  # type: ignore[arg-type]


def _coerce_missing_values_without_pydantic() -> None:
    """Typer 0.29's internals; another typer (installed without requirements.lock) keeps
    its own coercion: slower help, same behaviour."""
    try:
        from typer._coercion import RuntimeParam
        from typer.core import _TyperParameter
    except ImportError:
        return
    if not (hasattr(_TyperParameter, "process_value") and hasattr(RuntimeParam, "coerce")):
        return
    process_value = _TyperParameter.process_value
    if getattr(process_value, "_canvascast", False):
        return

    def process_missing_value_lightly(self: Any, ctx: Any, value: Any) -> Any:
        if value is not None or self._runtime_param is not None:
            return process_value(self, ctx, value)
        self._runtime_param = _NoAdapter()
        try:
            return process_value(self, ctx, value)
        finally:
            self._runtime_param = None

    process_missing_value_lightly._canvascast = True  # type: ignore[attr-defined]
    _TyperParameter.process_value = process_missing_value_lightly  # type: ignore[method-assign]
