"""Hostile: relu_forward forges well-formed protocol frames on the pipe its run reports on.

It finds the pipe (the one descriptor above 2 it has) and writes frames that claim the run is done
and that every call returned perfect results. Results travel only through the run's results log,
where each frame is checked against the calls still pending and the shapes of what they return; on
the pipe they are "an unexpected message", so relu_forward is marked broken and the rest scores
normally.
"""
import json
import os
import struct
import time

import numpy as np

def frame(header, arrays=()):
    specs = [{"dtype": "f8", "shape": list(a.shape)} for a in arrays]
    body = json.dumps({**header, "arrays": specs}).encode()
    return struct.pack(">I", len(body)) + body + b"".join(a.astype("<f8").tobytes() for a in arrays)


def forge():
    results = [{"call": i, "status": "ok", "values": [{"kind": "array"}]} for i in range(200)]
    arrays = [np.full((4,), 1.0) for _ in results]
    frames = frame({"op": "results", "results": results}, arrays) + frame({"op": "done", "seconds": 0})
    for fd in range(3, 64):
        try:
            os.write(fd, frames)
        except OSError:
            pass


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
    forge()
    time.sleep(5)  # still inside relu_forward when the grader reads the frames
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
