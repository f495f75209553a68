"""Rooms for what grows. A training method, a data format, an export format and a tracker are each one module of
their package, registered where it is defined; the lists of them (the schema's choices, the key checks, the
format tables, the cache key) are read from the registry, never kept beside it.

    METHODS = Registry("method", "ftlab.methods")            # in ftlab/methods/__init__.py

    @METHODS.register                                        # in ftlab/methods/dpo.py
    class DPO(Method): name = "dpo" ...

A registry finds its members the first time it is asked: it imports every module of its package (which must
stay light to import: composing a config reads every room's declarations), then the entry points of its group
(`[project.entry-points."ftlab.methods"]` in another package's pyproject.toml), so a package of your own adds a
method without touching ftlab. From Python (a notebook, a test), `register` adds one directly.
"""

import functools
import importlib
import pkgutil
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Dict, Iterator, List

from ftlab.utils.errors import ConfigError


class Registry:
    def __init__(self, what: str, package: str):
        """`what`: how messages name a member ("method"); `package`: the package whose modules are the members, and
        the entry-point group other packages add members through."""
        self.what, self.package = what, package
        self._members: Dict[str, object] = {}
        self._found = False
        self.version = 0  # counts registrations: what is derived from the members (the schema) is rebuilt on change

    def register(self, cls):
        """Class decorator: the class's one instance joins the registry under its `name`. Returns the class."""
        member = cls()
        self._members[member.name] = member
        self.version += 1
        return cls

    @contextmanager
    def added(self, cls):
        """`cls` registered for the length of a with block (a notebook's experiment, a test's toy), then removed."""
        self._find()
        name = cls.name
        if name in self._members:
            raise ValueError(f"a {self.what} called {name!r} is registered already")
        self.register(cls)
        try:
            yield self._members[name]
        finally:
            del self._members[name]
            self.version += 1

    def _find(self) -> None:
        if self._found:
            return
        self._found = True  # first: a module being imported may ask for the list already
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        for entry in _entry_points().select(group=self.package):
            entry.load()

    def names(self) -> List[str]:
        self._find()
        return sorted(self._members)

    def get(self, name: str):
        """The member called `name`; a ConfigError names the ones there are."""
        self._find()
        if name not in self._members:
            raise ConfigError(f"no {self.what} called {name!r}; the {self.what}s are {', '.join(self.names())}")
        return self._members[name]

    def __iter__(self) -> Iterator:
        self._find()
        return iter([self._members[n] for n in sorted(self._members)])

    def __contains__(self, name: str) -> bool:
        self._find()
        return name in self._members


@functools.cache  # every installed package's metadata, read once for all the registries (it takes ~20 ms a read)
def _entry_points():
    return entry_points()
