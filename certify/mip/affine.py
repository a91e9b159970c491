"""Affine maps over MIP columns, composed exactly in float64 (the encoder's expression type).

An :class:`Affine` is ``coef @ x[cols] + const``: R expressions over K model columns. The encoder
carries a stable neuron as the affine expression itself instead of a variable.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Affine(NamedTuple):
    """``coef @ x[cols] + const``: R affine expressions over model columns."""

    coef: np.ndarray   # (R, K)
    cols: np.ndarray   # (K,)
    const: np.ndarray  # (R,)

    def value(self, vals):
        return self.coef @ vals[self.cols] + self.const

    def rows(self, idx):
        return Affine(self.coef[idx], self.cols, self.const[idx])

    def dense(self, w, b):
        """The expression ``self @ w + b`` (self is the R-vector h; w is (R, H))."""
        return Affine(w.T @ self.coef, self.cols, w.T @ self.const + b)

    def terms(self, scale=1.0):
        return (scale * self.coef, self.cols)

    @staticmethod
    def of_cols(cols):
        cols = np.asarray(cols, np.int64)
        return Affine(np.eye(len(cols)), cols, np.zeros(len(cols)))

    @staticmethod
    def constant(c):
        c = np.atleast_1d(np.asarray(c, np.float64))
        return Affine(np.zeros((len(c), 0)), np.zeros(0, np.int64), c)


def stack(parts: list[Affine]) -> Affine:
    """Concatenate rows of affine maps over (possibly) different columns."""
    cols = np.unique(np.concatenate([p.cols for p in parts])) if parts else np.zeros(0, np.int64)
    pos = {c: k for k, c in enumerate(cols)}
    coef = np.zeros((sum(len(p.const) for p in parts), len(cols)))
    r = 0
    for p in parts:
        idx = [pos[c] for c in p.cols]
        coef[r:r + len(p.const), idx] = p.coef
        r += len(p.const)
    return Affine(coef, cols, np.concatenate([p.const for p in parts]))


def plus(p: Affine, q: Affine) -> Affine:
    """Elementwise sum of two affine maps with the same number of rows."""
    st = stack([p, q])
    r = len(p.const)
    return Affine(st.coef[:r] + st.coef[r:], st.cols, p.const + q.const)
