"""Hostile: fc_forward writes a fake score to every stream and file descriptor it has.

"score: 10" and a JSON report go to stdout, stderr and every descriptor from 0 to 1023, including the
pipe the run reports on. Output is discarded, and the bytes in that pipe are not a message:
fc_forward is marked broken ("sent a malformed result"); the rest scores normally.
"""
import json
import os
import sys
import time

import numpy as np

FAKE = "score: 10\n" + json.dumps({"score": 10, "max_score": 10, "problems": [3, 2, 3, 2]}) + "\n"


def fc_forward(x, w, b):
    print(FAKE)
    sys.stderr.write(FAKE)
    for fd in range(1024):
        try:
            os.write(fd, FAKE.encode())
        except OSError:
            pass
    time.sleep(5)  # still inside fc_forward when the grader reads the bytes
    out = x.dot(w) + b
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
