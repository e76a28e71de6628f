"""The one registry of moto fixes, and the one way each is undone: applying a fix returns its own undo.

A fix is a function registered with `@patch(service)`; it changes moto (through `replace` and
`replace_items`, which remember what was there) and returns the undo. `LocalCloud` applies every
registered fix with `apply_all` and undoes them with the callable it returns; a test shows a
limitation with `remove(name)` and puts the fix back with `apply(name)`, which applies it with the
resources `apply_all` was given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Undo = Callable[[], None]


@dataclass(frozen=True)
class Patch:
    """A registered fix: `install(**resources)` applies it and returns its undo."""

    name: str
    service: str
    install: Callable[..., Undo]

    @property
    def needs(self) -> tuple[str, ...]:
        """The resources the fix takes (keyword arguments of `install`), e.g. `lambda_account`."""
        return tuple(inspect.signature(self.install).parameters)


PATCHES: dict[str, Patch] = {}  # in registration order, which is the order `apply_all` applies them
_applied: dict[str, Undo] = {}
_resources: dict[str, Any] = {}  # what `apply_all` was given, for `apply` to put a removed fix back
_replaced: dict[tuple[int, str], tuple[Any, str]] = {}  # (id(owner), attribute) -> (owner, the fix that replaced it)
_installing: list[str] = []  # the fix being applied, for `replace` to name


def patch(service: str) -> Callable[[Callable[..., Undo]], Callable[..., Undo]]:
    """Register a fix under its function's name, grouped by the AWS service whose emulation it corrects."""

    def register(install: Callable[..., Undo]) -> Callable[..., Undo]:
        if install.__name__ in PATCHES:
            raise ValueError(f"a moto fix named {install.__name__!r} is registered twice; give one another name")
        PATCHES[install.__name__] = Patch(install.__name__, service, install)
        return install

    return register


def apply(name: str, **resources: Any) -> Undo:
    """Apply one fix (again), unless it is in force; the answer undoes it.

    Resources not given here are those `apply_all` was given.
    """
    if name not in PATCHES:
        raise KeyError(f"no moto fix is named {name!r}; registered: {', '.join(PATCHES)}")
    if name not in _applied:
        fix = PATCHES[name]
        known = {**_resources, **resources}
        missing = [need for need in fix.needs if need not in known]
        if missing:
            raise TypeError(f"the moto fix {name!r} needs {', '.join(missing)}: pass them to apply or apply_all")
        _installing.append(name)
        try:
            _applied[name] = fix.install(**{need: known[need] for need in fix.needs})
        finally:
            _installing.pop()
    return lambda: remove(name)


def remove(name: str) -> None:
    """Undo one fix if it is in force (tests do, to show the limitation it covers)."""
    if name not in PATCHES:
        raise KeyError(f"no moto fix is named {name!r}; registered: {', '.join(PATCHES)}")
    undo = _applied.pop(name, None)
    if undo is not None:
        undo()


def apply_all(**resources: Any) -> Undo:
    """Apply every registered fix, in registration order; the answer undoes them all, in reverse."""
    _resources.update(resources)
    for name in PATCHES:
        apply(name)

    def undo() -> None:
        for name in reversed(list(PATCHES)):
            remove(name)
        _resources.clear()

    return undo


def is_applied(name: str) -> bool:
    return name in _applied


def replaced() -> list[tuple[Any, str]]:
    """What the fixes in force replaced: (owner, attribute) pairs."""
    return [(owner, attribute) for (_, attribute), (owner, _) in _replaced.items()]


_MISSING = object()


def replace(owner: Any, **attributes: Any) -> Undo:
    """Set `owner`'s attributes (a class's or a module's); the answer puts back exactly what was there.

    What was there is read from the owner's own namespace, so a classmethod or staticmethod comes
    back as it was, and an attribute the owner inherited (or did not have) is deleted again.
    Two fixes may not replace the same attribute: undoing one would silently drop the other.
    """
    fix = _installing[-1] if _installing else "a moto fix"
    saved = {name: vars(owner).get(name, _MISSING) for name in attributes}
    for name in attributes:
        _, holder = _replaced.get((id(owner), name), (None, None))
        if holder is not None:
            raise RuntimeError(f"{fix} replaces {getattr(owner, '__name__', owner)}.{name}, which {holder} replaced"
                               " already: make one fix wrap the other's work instead")
    for name, value in attributes.items():
        setattr(owner, name, value)
        _replaced[(id(owner), name)] = (owner, fix)

    def undo() -> None:
        for name, value in saved.items():
            _replaced.pop((id(owner), name), None)
            if value is _MISSING:
                if name in vars(owner):
                    delattr(owner, name)
            else:
                setattr(owner, name, value)

    return undo


def replace_items(mapping: dict[Any, Any], items: Mapping[Any, Any]) -> Undo:
    """Set entries of a dictionary moto reads (its config, a URL map); the answer puts back what was there."""
    saved = {key: mapping.get(key, _MISSING) for key in items}
    mapping.update(items)

    def undo() -> None:
        for key, value in saved.items():
            if value is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = value

    return undo


def undo_all(*undos: Undo) -> Undo:
    """One undo for several, run in reverse order."""

    def undo() -> None:
        for one in reversed(undos):
            one()

    return undo

