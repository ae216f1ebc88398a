"""The reference hybrid QGAN: a 3-qubit generator learning a discretised log-normal (Zoufal et al. 2019).

Written with Qiskit or PennyLane exactly as users write it; qobs observes it through its adapters
and the explicit training hooks in ``qobs.training``. ``reference_qgan.train.train`` is the entry
point; ``qobs demo`` and ``qobs qgan`` drive it from the command line.
"""

from __future__ import annotations

__all__ = ["PROFILES", "TrainConfig", "train"]


def __getattr__(name: str):  # lazy: importing the package loads no SDK
    if name in __all__:
        from reference_qgan import train as _train

        return getattr(_train, name)
    raise AttributeError(name)
