"""Hostile: it patches numpy and builtins at import so that comparisons always pass.

np.allclose, np.isclose, np.array_equal and np.testing all say "equal", print is silenced, and
fc_forward returns zeros. Comparisons happen in the grader's own process, which never sees the
patches: fc_forward scores 0 for its values and its gradient check, the rest scores normally.
"""
import builtins
import math

import numpy as np

np.allclose = lambda *args, **kwargs: True
np.isclose = lambda a, b, *args, **kwargs: np.ones(np.broadcast(a, b).shape, dtype=bool)
np.array_equal = lambda *args, **kwargs: True
np.testing.assert_allclose = lambda *args, **kwargs: None
np.testing.assert_array_equal = lambda *args, **kwargs: None
math.isclose = lambda *args, **kwargs: True
builtins.print = lambda *args, **kwargs: None
builtins.abs = lambda value: 0


def fc_forward(x, w, b):
    out = np.zeros((x.shape[0], w.shape[1]))
    cache = (x, w, b)
    return out, cache


def fc_backward(grad_out, cache):
    x, w, b = cache
    grad_x = grad_out.dot(w.T)
    grad_w = x.T.dot(grad_out)
    grad_b = np.sum(grad_out, axis=0)
    return grad_x, grad_w, grad_b


def relu_forward(x):
    out = np.maximum(0, x)
    cache = x
    return out, cache


def relu_backward(grad_out, cache):
    x = cache
    grad_x = grad_out * (x > 0)
    return grad_x


def softmax_loss(x, y):
    N = x.shape[0]
    shifted = x - np.max(x, axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / np.sum(exp, axis=1, keepdims=True)
    loss = -np.mean(np.log(probs[np.arange(N), y]))
    grad_x = probs.copy()
    grad_x[np.arange(N), y] -= 1
    grad_x /= N
    return loss, grad_x


def l2_regularization(w, reg):
    loss = 0.5 * reg * np.sum(w * w)
    grad_w = reg * w
    return loss, grad_w
