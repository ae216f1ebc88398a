"""qobs adapter for PennyLane: every device execution becomes a qobs job.

Supported PennyLane: **0.40 to 0.45** (0.40.0, 0.41.1 and 0.45.1 tested; see ``SUPPORTED``). Importing this
module does not import PennyLane: the adapter watches the ``pennylane`` module and patches it
when it is imported (at once if it already is).

What is patched (all through the ``Patcher``, so ``uninstrument()`` restores by identity):

* every ``pennylane.devices.Device`` subclass's own ``execute``, ``compute_derivatives``,
  ``execute_and_compute_derivatives``, ``compute_vjp``, ``execute_and_compute_vjp``,
  ``compute_jvp`` and ``execute_and_compute_jvp`` (the whole ``__subclasses__()`` tree at
  instrument time; classes defined later are patched when their first instance is built, through
  ``Device.__init__`` and ``qml.device``). This covers default.qubit, default.mixed,
  lightning.qubit, plugin devices and the legacy-device facade, and devices built before
  ``instrument()``. A device method that calls another observed method (``super().execute``, a
  delegate device, Tracker's wrappers) is observed once, at the outermost call.
* the ``JacobianProductCalculator`` methods and ``qml.execute``, only to mark the gradient scope.

Forward vs gradient (the ``purpose`` label), in this order:

1. a device derivative method (``compute_derivatives``, ``execute_and_compute_*``,
   ``compute_vjp``/``jvp``) is ``gradient``;
2. ``execute`` running inside a ``JacobianProductCalculator`` method (the VJP/JVP/Jacobian of an
   autodiff interface: autograd, numpy, torch, jax, tf) is ``gradient``: with parameter-shift,
   finite-diff, SPSA or Hadamard these are the gradient tapes (2P tapes for P trainable
   parameters with parameter-shift);
3. ``execute`` inside ``qml.execute`` whose transform program holds a ``qml.gradients`` transform
   (``qml.gradients.param_shift(qnode)(x)``, ``qml.metric_tensor``) is ``gradient``;
4. anything else is ``forward``. Backprop differentiates through the forward execution: one
   forward job, no gradient job.

Known limits: gradient tapes a user builds by hand (``qml.gradients.param_shift(tape)``) and runs
with ``dev.execute`` count as forward; a jax ``execute_and_compute_jvp`` batch that mixes the
forward tapes with the JVP tapes is one job labelled gradient.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

SUPPORTED = ("0.40", "0.45")  # oldest and newest PennyLane minor versions tested


class PennyLaneAdapter:
    """The ``pennylane`` entry of the ``qobs.adapters`` group."""

    name = "pennylane"
    modules = ("pennylane",)

    def on_import(self, module: ModuleType, patcher: Any) -> None:
        from qobs_pennylane import _patches

        _patches.install(module, patcher)

    def uninstrument(self) -> None:
        import sys

        patches = sys.modules.get("qobs_pennylane._patches")
        if patches is not None:
            patches.reset()


__all__ = ["SUPPORTED", "PennyLaneAdapter"]
