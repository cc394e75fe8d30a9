"""Homework 5's functions and the seeded input cases its checks run on.

Shapes vary (N = 1, Dout = 1 and Din = Dout included). Gradient checks take one small case each
(every element of every input is nudged four times: that is most of a run's cost), with small input
scales and ReLU inputs kept at least 0.1 away from 0, so that a correct implementation passes the
1e-9 criterion with a wide margin and both `x > 0` and `x >= 0` masks are right.
"""

from __future__ import annotations

import numpy as np

from grader.engine.spec import CacheFrom, Case, Function

FUNCTIONS = [
    Function("fc_forward", ("x", "w", "b"), ("out", "cache"), keep=("cache",)),
    Function(
        "fc_backward",
        ("grad_out", "cache"),
        ("grad_x", "grad_w", "grad_b"),
        cache=CacheFrom("cache", "fc_forward", "cache", ("x", "w", "b")),
    ),
    Function("relu_forward", ("x",), ("out", "cache"), keep=("cache",)),
    Function(
        "relu_backward",
        ("grad_out", "cache"),
        ("grad_x",),
        bare=True,
        cache=CacheFrom("cache", "relu_forward", "cache", "x"),
    ),
    Function("softmax_loss", ("x", "y"), ("loss", "grad_x")),
    Function("l2_regularization", ("w", "reg"), ("loss", "grad_w")),
]


def _fc(rng: np.random.Generator, n: int, d_in: int, d_out: int, scale: float = 1.0) -> Case:
    return {
        "x": scale * rng.standard_normal((n, d_in)),
        "w": scale * rng.standard_normal((d_in, d_out)),
        "b": scale * rng.standard_normal(d_out),
        "grad_out": rng.standard_normal((n, d_out)),
    }


def fc_cases(rng: np.random.Generator) -> list[Case]:
    return [_fc(rng, *shape) for shape in [(3, 4, 5), (1, 6, 3), (4, 5, 1), (5, 5, 5), (8, 10, 7)]]


def fc_gradcheck_cases(rng: np.random.Generator) -> list[Case]:
    return [_fc(rng, 2, 3, 2, scale=0.5)]


def _away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Both signs always present: with every input negative, a correct ReLU's numeric gradient would
    be zero everywhere, and the gradient check gives no credit for that."""
    magnitude = rng.uniform(0.1, 2.0, size=shape)
    signs = np.where(rng.random(shape) < 0.5, -1.0, 1.0).reshape(-1)
    if signs.size >= 2:
        signs[:2] = rng.permutation([-1.0, 1.0])
    return magnitude * signs.reshape(shape)


def _relu(rng: np.random.Generator, shape: tuple[int, ...]) -> Case:
    return {"x": _away_from_zero(rng, shape), "grad_out": rng.standard_normal(shape)}


def relu_cases(rng: np.random.Generator) -> list[Case]:
    return [_relu(rng, shape) for shape in [(4, 5), (1, 3), (2, 3, 4), (7,), (6, 6)]]


def relu_gradcheck_cases(rng: np.random.Generator) -> list[Case]:
    return [_relu(rng, (2, 3))]


def _softmax(rng: np.random.Generator, n: int, c: int, scale: float = 1.0) -> Case:
    return {"x": scale * rng.standard_normal((n, c)), "y": rng.integers(0, c, size=n)}


def softmax_cases(rng: np.random.Generator) -> list[Case]:
    return [_softmax(rng, *shape) for shape in [(4, 5), (1, 3), (6, 10), (3, 2), (10, 4)]]


def softmax_gradcheck_cases(rng: np.random.Generator) -> list[Case]:
    return [_softmax(rng, 2, 3, scale=0.5)]


def softmax_stability_cases(rng: np.random.Generator) -> list[Case]:
    """Huge scores whose correct loss stays ordinary: the handout's matrix and row-shifted cases."""
    handout = np.array([[1e3, 0, -1e3], [-1e3, 1e3, 0], [0, -1e3, 1e3]])
    cases: list[Case] = [{"x": handout, "y": np.array([0, 1, 2])}]
    for shifts in ([1e4], [-1e4], [1e4, -1e4, 5e3, -5e3], [3e5, -3e5, 1e5, 2e4]):
        case = _softmax(rng, 4, 5)
        offsets = np.resize(np.array(shifts), 4)[:, None]
        case["x"] = case["x"] + offsets
        cases.append(case)
    return cases


def _l2(rng: np.random.Generator, shape: tuple[int, ...], reg: float) -> Case:
    return {"w": rng.standard_normal(shape), "reg": reg}


def l2_cases(rng: np.random.Generator) -> list[Case]:
    return [_l2(rng, (3, 4), 0.1), _l2(rng, (5,), 0.5), _l2(rng, (2, 3, 4), 1e-3), _l2(rng, (10, 7), 2.0)]


def l2_gradcheck_cases(rng: np.random.Generator) -> list[Case]:
    return [_l2(rng, (2, 2), 0.1)]


CASE_SETS = {
    "fc": fc_cases,
    "fc_gradcheck": fc_gradcheck_cases,
    "relu": relu_cases,
    "relu_gradcheck": relu_gradcheck_cases,
    "softmax": softmax_cases,
    "softmax_gradcheck": softmax_gradcheck_cases,
    "softmax_stability": softmax_stability_cases,
    "l2": l2_cases,
    "l2_gradcheck": l2_gradcheck_cases,
}
