"""Helpers shared by the chapters' check modules."""

from __future__ import annotations

import numpy as np
import torch


def ok(message: str) -> None:
    """The one line a passing check prints."""
    print(f"✓ {message}")


def fail(what: str, expected, got, hint: str):
    raise AssertionError(
        f"{what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}"
    )


def call(fn, *args, what: str, hint: str):
    """Call the learner's function; turn 'not written yet' into a clear failure."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise AssertionError(
            f"{what}: the exercise is not done yet (it still raises "
            f"NotImplementedError)\n  hint: {hint}"
        ) from None


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def assert_equal(got, expected, what: str, hint: str) -> None:
    """Exact equality of arrays or tensors, shape and dtype kind included."""
    g, e = to_numpy(got), to_numpy(expected)
    if g.shape != e.shape:
        fail(f"{what}: wrong shape", list(e.shape), list(g.shape), hint)
    if g.dtype.kind != e.dtype.kind and not (
        g.dtype.kind in "iu" and e.dtype.kind in "iu"
    ):
        fail(f"{what}: wrong dtype", e.dtype, g.dtype, hint)
    if not np.array_equal(g, e):
        where = np.argwhere(g != e)[0].tolist()
        fail(
            f"{what}: values differ (first at index {where})",
            e[tuple(where)],
            g[tuple(where)],
            hint,
        )


def assert_close(got, expected, what: str, hint: str, atol=1e-6, rtol=1e-5) -> None:
    """Closeness of arrays or tensors (NaN equals NaN)."""
    g, e = to_numpy(got).astype(np.float64), to_numpy(expected).astype(np.float64)
    if g.shape != e.shape:
        fail(f"{what}: wrong shape", list(e.shape), list(g.shape), hint)
    close = np.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
    if not close.all():
        where = np.argwhere(~close)[0].tolist()
        fail(
            f"{what}: values differ (first at index {where}, max abs difference "
            f"{np.nanmax(np.abs(g - e)):.3g})",
            e[tuple(where)],
            g[tuple(where)],
            hint,
        )
