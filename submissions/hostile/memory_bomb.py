"""Hostile: two memory attacks.

relu_forward asks numpy for 8 GB in one go (MemoryError: the memory limit, relu_forward broken).
softmax_loss fills 200 MB itself, then forks three children that take 150 MB more each: each
process is under the address-space limit, but together they exceed the memory cgroup, and the
kernel kills the largest; softmax_loss reports that with a MemoryError, or is killed itself:
either way "memory limit of 512 MB exceeded in softmax_loss". Where runs may not start processes,
the fork fails instead; softmax_loss scores 0 in every case.
"""
import os
import time

import numpy as np

bombed = False

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
    hog = np.ones((1 << 30,))
    return hog, x


def relu_backward(grad_out, cache):
    x = cache
    grad_x = grad_out * (x > 0)
    return grad_x


def softmax_loss(x, y):
    global bombed
    if bombed:
        raise MemoryError("still out of memory")
    bombed = True
    hog = bytearray(200 << 20)
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            more = bytearray(150 << 20)
            time.sleep(0.3)
            os._exit(0)
        children.append(pid)
    killed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    raise MemoryError(f"{len(hog)} bytes survived; the kernel killed {len(killed)} children")


def l2_regularization(w, reg):
    loss = 0.5 * reg * np.sum(w * w)
    grad_w = reg * w
    return loss, grad_w
