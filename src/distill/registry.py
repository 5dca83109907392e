"""One registry class for every pluggable kind of thing (models, methods, datasets ...).

Registering a name twice is an error (nothing is silently overwritten); looking up an unknown name raises
:class:`~distill.errors.UnknownNameError` naming the closest matches and everything that exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from distill.errors import UnknownNameError

T = TypeVar("T")


def suggest(name: str, options: list[str], what: str) -> str:
    """Message for an unknown ``name``: the nearest options first, then all of them."""
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Available: {', '.join(sorted(options))}"


class Registry(Generic[T]):
    """A name -> object map filled by a decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("resnet8")`` (defaults to the object's ``__name__``)."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` without a decorator."""
        return self.register(name)(obj)

    def remove(self, name: str) -> T:
        """Unregister ``name`` (e.g. a test's toy entry) and return what it named."""
        self.get(name)  # an unknown name is an UnknownNameError, as for a lookup
        return self._items.pop(name)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(suggest(name, list(self._items), self.kind))
        return self._items[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
