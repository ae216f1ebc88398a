"""Circuit shape (width, depth, two-qubit gates) of PennyLane tapes, cached by circuit structure.

The key is the operation types and wires plus the measurement types and wires: never
the parameter values, so the 2P shifted tapes of a parameter-shift gradient and every training
step of the same ansatz hit one entry. Computing the shape from the operations costs about 0.6x
``tape.specs`` (measured: 145 vs 195 us for a 33-gate, 4-qubit tape); building the key costs a
fraction of that. The cache is bounded (FIFO eviction).

Definitions: width = wires of the tape (operations and measurements); depth = longest chain of
operations sharing a wire (``Barrier``/``Snapshot`` markers and wire-less operations such as
``GlobalPhase`` are not counted); two-qubit gates = operations on exactly two wires, markers
excluded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from operator import attrgetter, call
from typing import Any

from qobs import _forksafe
from qobs.telemetry import CircuitStats

MAX_STRUCTURES = 1024
_MARKERS = frozenset({"Barrier", "Snapshot"})


def _wire_labels(op: Any) -> Hashable:
    return tuple(op.wires)


_getters: dict[type, Callable[[Any], Hashable]] = {}
_cache: dict[Hashable, CircuitStats] = {}
_lock = threading.Lock()
_forksafe.module_locks(__name__, "_lock")
misses = 0


def _controlled_labels(op: Any) -> Hashable:
    hp = op._hyperparameters  # private fields, checked against ``op.wires`` per type in ``_getter``
    return hp["control_wires"]._labels + hp["base"]._wires._labels  # = op.wires: control, then target


def _getter(op: Any) -> Callable[[Any], Hashable]:
    """A cheap, exact stand-in for the labels of ``op.wires`` for this operator type.

    Wire labels (plain tuples) hash and compare in C, ``Wires`` objects in Python; and
    ``Controlled.wires`` builds a new ``Wires`` on every access. The fast getters read private
    fields, so each is checked against the public ``op.wires`` on the type's first operator and
    the generic getter is kept when they disagree (or are missing, as in other versions).
    """
    tp = type(op)
    g = _getters.get(tp)
    if g is not None:
        return g
    g = _wire_labels
    try:
        from pennylane.operation import Operator

        prop = getattr(tp, "wires", None)
        labels = tuple(op.wires)
        if prop is Operator.__dict__.get("wires") and tuple(op._wires._labels) == labels:
            g = attrgetter("_wires._labels")
        else:
            try:
                from pennylane.ops.op_math.controlled import Controlled
            except ImportError:  # pragma: no cover - older layouts
                Controlled = None
            if (Controlled is not None and isinstance(op, Controlled) and prop is Controlled.__dict__.get("wires")
                    and op.base is op._hyperparameters["base"]
                    and tuple(_controlled_labels(op)) == labels):
                g = _controlled_labels
    except Exception:  # noqa: BLE001 - an exotic operator type: the generic getter is exact
        g = _wire_labels
    if len(_getters) < 4096:
        _getters[tp] = g
    return g


def structure_key(tape: Any) -> Hashable:
    """Operation types and wires, measurement types and wires (no parameter values).

    Built as flat tuples (the types, then one label tuple per operation), which build and hash
    faster than a tuple of (type, labels) pairs; the labels through ``map(call, getters, ops)``,
    which runs the per-type getters without a Python loop (3.1 vs 4.1 us for the 33-gate tape).
    """
    ops = tape.operations
    types = tuple(map(type, ops))
    try:
        labels = tuple(map(call, map(_getters.__getitem__, types), ops))
    except KeyError:  # an operator type not seen yet
        getters = _getters
        labels = tuple([(getters.get(tp) or _getter(op))(op) for tp, op in zip(types, ops, strict=True)])
    # Measurement wires, not ``tape.wires``: that cached property costs about 75 us on a fresh tape.
    return types, labels, tuple([(type(m), tuple(m.wires)) for m in tape.measurements])


def compute(tape: Any) -> CircuitStats:
    """Width, depth and two-qubit gates of one tape, from its operations (no cache)."""
    level: dict[Hashable, int] = {}
    two_q = 0
    depth = 0
    for op in tape.operations:
        if op.name in _MARKERS:
            continue
        ws = op.wires
        n = len(ws)
        if n == 0:
            continue
        if n == 2:
            two_q += 1
        d = 1 + max([level.get(w, 0) for w in ws])
        for w in ws:
            level[w] = d
        if d > depth:
            depth = d
    return CircuitStats(width=len(tape.wires), depth=depth, two_qubit_gates=two_q)


def stats(tape: Any) -> CircuitStats:
    """Cached shape of ``tape`` (computed once per structure)."""
    key = structure_key(tape)
    s = _cache.get(key)
    return s if s is not None else _add(key, tape)


def stats_batch(tapes: Sequence[Any]) -> list[CircuitStats]:
    """``[stats(t) for t in tapes]``. A tape of the same structure as the one before it (the 2P shifted
    tapes of a parameter-shift gradient) is matched by comparing keys, without hashing its key."""
    out: list[CircuitStats] = []
    prev_key: Hashable = None
    s: CircuitStats | None = None
    for tape in tapes:
        key = structure_key(tape)
        if s is None or key != prev_key:
            s = _cache.get(key)
            if s is None:
                s = _add(key, tape)
            prev_key = key
        out.append(s)
    return out


def _add(key: Hashable, tape: Any) -> CircuitStats:
    """Compute and cache the shape of a structure not in the cache."""
    global misses
    s = compute(tape)
    with _lock:
        misses += 1
        while len(_cache) >= MAX_STRUCTURES:
            _cache.pop(next(iter(_cache)))
        _cache[key] = s
    return s


def size() -> int:
    return len(_cache)


def clear() -> None:
    global misses
    with _lock:
        _cache.clear()
        _getters.clear()
        misses = 0
