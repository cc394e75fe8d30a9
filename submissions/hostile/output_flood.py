"""Hostile: three kinds of flood.

softmax_loss prints 64 MB to stdout and stderr (discarded) and answers correctly; relu_backward writes
a frame on its result pipe announcing an 800 MB array (over the output limit: "output limit"
breach, relu_backward broken); l2_regularization returns a gradient of 5 million elements (too
large to be sent: the gradient and its check fail, the loss still scores).
"""
import json
import os
import struct
import sys
import time

import numpy as np

flooded = False


def huge_frame():
    body = json.dumps({"op": "results", "results": [], "arrays": [{"dtype": "f8", "shape": [100_000_000]}]}).encode()
    return struct.pack(">I", len(body)) + body


def fc_forward(x, w, b):
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
    for fd in range(3, 64):
        try:
            os.write(fd, huge_frame())
            os.write(fd, b"\0" * (1 << 16))
        except OSError:
            pass
    time.sleep(5)  # still inside relu_backward when the grader reads the frame
    x = cache
    return grad_out * (x > 0)


def softmax_loss(x, y):
    global flooded
    if not flooded:
        flooded = True
        chunk = "flood " * (1 << 20)
        for _ in range(11):
            print(chunk)
            sys.stderr.write(chunk)
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
    grad_w = np.zeros(5_000_000)
    return loss, grad_w
