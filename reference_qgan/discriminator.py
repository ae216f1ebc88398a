"""The classical discriminator: a 1 -> 20 -> 1 network (LeakyReLU, sigmoid) trained with Adam, in NumPy.

It is trained on whole histograms: the weighted binary cross-entropy over the bins,
``-sum_k [q_k log D(x_k) + p_k log(1 - D(x_k))]``, with ``q`` the real (target) distribution and
``p`` the generator's empirical distribution from its shots. For discrete data this equals the usual
sample-based loss in expectation over batches, without the batch noise (a standard QGAN formulation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EPS = 1e-7


class Adam:
    """Adam over a dict of arrays (updated in place)."""

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for k, g in grads.items():
            m = self.m.setdefault(k, np.zeros_like(g))
            v = self.v.setdefault(k, np.zeros_like(g))
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            params[k] -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def state(self) -> dict[str, Any]:
        return {"t": self.t, "m": {k: v.tolist() for k, v in self.m.items()},
                "v": {k: v.tolist() for k, v in self.v.items()}}

    def load(self, s: dict[str, Any]) -> None:
        self.t = int(s["t"])
        self.m = {k: np.asarray(v, float) for k, v in s["m"].items()}
        self.v = {k: np.asarray(v, float) for k, v in s["v"].items()}


class Discriminator:
    """D(x) = sigmoid(w2 . leaky_relu(w1 x + b1) + b2) on values normalised to [-1, 1]."""

    def __init__(self, bins: int, rng: np.random.Generator, hidden: int = 20, lr: float = 0.01,
                 slope: float = 0.2) -> None:
        self.slope = slope
        self.x = np.linspace(-1.0, 1.0, bins)  # the bins' values 0..bins-1, normalised
        lim1, lim2 = np.sqrt(6 / (1 + hidden)), np.sqrt(6 / (hidden + 1))
        self.params = {"w1": rng.uniform(-lim1, lim1, hidden), "b1": np.zeros(hidden),
                       "w2": rng.uniform(-lim2, lim2, hidden), "b2": np.zeros(1)}
        self.opt = Adam(lr, beta1=0.5)

    def _forward(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.params
        z = np.outer(self.x, p["w1"]) + p["b1"]            # (bins, hidden)
        h = np.where(z > 0, z, self.slope * z)
        logit = h @ p["w2"] + p["b2"][0]                    # (bins,)
        return z, h, logit

    def outputs(self) -> np.ndarray:
        """D at every bin, clipped away from 0 and 1."""
        return np.clip(1 / (1 + np.exp(-self._forward()[2])), _EPS, 1 - _EPS)

    def loss(self, real: np.ndarray, fake: np.ndarray) -> float:
        d = self.outputs()
        return float(-np.sum(real * np.log(d) + fake * np.log(1 - d)))

    def train_step(self, real: np.ndarray, fake: np.ndarray) -> float:
        """One Adam step on the weighted BCE; returns the loss before the step."""
        z, h, logit = self._forward()
        d = np.clip(1 / (1 + np.exp(-logit)), _EPS, 1 - _EPS)
        loss = float(-np.sum(real * np.log(d) + fake * np.log(1 - d)))
        g_logit = d * (real + fake) - real                  # dL/dlogit per bin
        p = self.params
        g_h = np.outer(g_logit, p["w2"]) * np.where(z > 0, 1.0, self.slope)
        grads = {"w2": h.T @ g_logit, "b2": np.array([g_logit.sum()]),
                 "w1": self.x @ g_h, "b1": g_h.sum(axis=0)}
        self.opt.step(p, grads)
        return loss

    def state(self) -> dict[str, Any]:
        return {"params": {k: v.tolist() for k, v in self.params.items()}, "adam": self.opt.state()}

    def load(self, s: dict[str, Any]) -> None:
        self.params = {k: np.asarray(v, float) for k, v in s["params"].items()}
        self.opt.load(s["adam"])
