"""Adapter discovery, patching and post-import hooks.

Adapters are found through the ``qobs.adapters`` entry-point group, so third parties can add
their own. ``instrument()`` never imports an SDK: each adapter names the modules it watches and
is called when one of them is imported (at once, if it already is). Every patch goes through a
``Patcher`` that remembers the original, so ``uninstrument()`` restores each one by identity.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from collections.abc import Callable
from importlib import metadata
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from qobs import _forksafe
from qobs.errors import contained, report_internal

ENTRY_POINT_GROUP = "qobs.adapters"
WRAPPED = "__qobs_wrapped__"
log = logging.getLogger("qobs")


class Patcher:
    """Replaces attributes and restores them exactly (own attribute vs inherited one)."""

    def __init__(self) -> None:
        self._patches: list[tuple[Any, str, Any, bool]] = []

    def wrap(self, owner: Any, name: str, make: Callable[[Any], Any]) -> bool:
        """Replace ``owner.name`` by ``make(original)``. Returns False when already wrapped."""
        raw = owner.__dict__.get(name, None) if hasattr(owner, "__dict__") else None
        own = raw is not None
        current = getattr(owner, name)
        if getattr(current, WRAPPED, None) is not None or getattr(raw, WRAPPED, None) is not None:
            return False
        replacement = make(raw if own else current)
        try:
            setattr(replacement, WRAPPED, raw if own else current)
        except (AttributeError, TypeError):
            pass
        self._patches.append((owner, name, raw if own else current, own))
        setattr(owner, name, replacement)
        return True

    def set(self, owner: Any, name: str, value: Any) -> None:
        """Replace ``owner.name`` by a ready value, remembering the original."""
        raw = owner.__dict__.get(name, None) if hasattr(owner, "__dict__") else None
        self._patches.append((owner, name, raw if raw is not None else getattr(owner, name, None), raw is not None))
        setattr(owner, name, value)

    def restore(self) -> None:
        while self._patches:
            owner, name, original, own = self._patches.pop()
            with contained("uninstrument"):
                if own:
                    setattr(owner, name, original)
                else:
                    try:
                        delattr(owner, name)
                    except AttributeError:
                        setattr(owner, name, original)

    def __len__(self) -> int:
        return len(self._patches)


@runtime_checkable
class Adapter(Protocol):
    """What an adapter provides. Importing its module must not import its SDK."""

    name: str
    modules: tuple[str, ...]

    def on_import(self, module: ModuleType, patcher: Patcher) -> None:
        """Patch what ``module`` (one of ``modules``) offers. Called once per module."""

    def uninstrument(self) -> None:
        """Forget caches and state; the patcher restores the patches themselves."""


class _Active:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.patcher = Patcher()
        self.done: set[str] = set()


_active: dict[str, _Active] = {}
_lock = threading.RLock()
_forksafe.module_locks(__name__, "_lock")


def discover() -> dict[str, Callable[[], Adapter]]:
    """Installed adapters by name (from the entry-point group)."""
    return {ep.name: ep.load for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def instrument(names: tuple[str, ...] | None = None) -> list[str]:
    """Activate the adapters (all installed ones by default). Idempotent."""
    with _lock:
        found = discover()
        for name in sorted(set(names or ()) - set(found)):  # a typo in QOBS_ADAPTERS must not pass unseen
            log.warning("qobs: no adapter named %r (installed: %s)", name, ", ".join(sorted(found)) or "none")
        for name, load in found.items():
            if (names is not None and name not in names) or name in _active:
                continue
            try:
                factory = load()
                adapter = factory() if callable(factory) else factory
            except Exception as exc:  # noqa: BLE001
                report_internal(f"adapter:{name}", exc)
                continue
            _active[name] = _Active(adapter)
        _ensure_finder()
        for mod_name in {m for a in _active.values() for m in a.adapter.modules}:
            module = sys.modules.get(mod_name)
            if module is not None:
                _notify(mod_name, module)
        _update_pending()
        return sorted(_active)


def uninstrument() -> None:
    with _lock:
        for name, act in list(_active.items()):
            act.patcher.restore()
            with contained(f"adapter:{name}"):
                act.adapter.uninstrument()
        _active.clear()
        _update_pending()


def active() -> list[str]:
    return sorted(_active)


def patch_count() -> int:
    return sum(len(a.patcher) for a in _active.values())


def _notify(mod_name: str, module: ModuleType) -> None:
    with _lock:
        for name, act in list(_active.items()):
            if mod_name in act.adapter.modules and mod_name not in act.done:
                act.done.add(mod_name)
                with contained(f"adapter:{name}"):
                    act.adapter.on_import(module, act.patcher)
        _update_pending()


# Modules some active adapter still waits for. The finder sits on sys.meta_path only while this is not
# empty: it runs on every import that misses sys.modules (PennyLane tries to import jax on every call).
_pending: frozenset[str] = frozenset()


def _update_pending() -> None:
    global _pending
    _pending = frozenset(m for a in _active.values() for m in a.adapter.modules if m not in a.done)
    if _pending:
        _ensure_finder()
    elif _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


class _HookLoader(importlib.abc.Loader):
    """Delegates to the real loader, then tells the adapters the module is ready."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _notify(module.__name__, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _pending:
            return None
        busy = getattr(self._busy, "names", None)
        if busy is None:
            busy = self._busy.names = set()
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            busy.discard(fullname)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _HookLoader(spec.loader)
        return spec


_finder = _Finder()


def _ensure_finder() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
