"""Hostile: three ways to end the process instead of returning.

relu_backward calls os._exit(0), softmax_loss os.abort(), l2_regularization sys.exit(3). Each is
reported for the function that did it; the rest scores normally.
"""
import os
import sys

import numpy as np

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
    os._exit(0)


def softmax_loss(x, y):
    os.abort()


def l2_regularization(w, reg):
    sys.exit(3)
