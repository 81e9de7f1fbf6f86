"""Typer's help renderer without the two imports it never uses here.

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

A test checks that ``--help`` neither imports them nor renders differently.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

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


class _Loader(importlib.abc.Loader):
    def __init__(self, real: importlib.abc.Loader) -> None:
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


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Once per process, before typer.rich_utils is first imported (a no-op after)."""
    if TARGET in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
