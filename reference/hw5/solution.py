"""The reference solution. It runs only in the trusted grader, never in a sandbox."""

from __future__ import annotations

import numpy as np


def fc_forward(x, w, b):
    out = x @ w + b
    return out, (x, w, b)


def fc_backward(grad_out, cache):
    x, w, _b = cache
    return grad_out @ w.T, x.T @ grad_out, grad_out.sum(axis=0)


def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(grad_out, cache):
    return grad_out * (cache > 0)


def softmax_loss(x, y):
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = x.shape[0]
    loss = -log_probs[np.arange(n), y].mean()
    grad = np.exp(log_probs)
    grad[np.arange(n), y] -= 1
    return loss, grad / n


def l2_regularization(w, reg):
    return 0.5 * reg * np.sum(w * w), reg * w
