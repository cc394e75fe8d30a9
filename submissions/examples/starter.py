import numpy as np


def fc_forward(x, w, b):
    """Forward pass of a fully-connected layer: x (N, Din), w (Din, Dout), b (Dout,)."""
    out = None
    ###########################################################################
    # TODO: Implement the forward pass.                                       #
    ###########################################################################
    cache = (x, w, b)
    return out, cache


def fc_backward(grad_out, cache):
    """Backward pass of a fully-connected layer."""
    x, w, b = cache
    grad_x, grad_w, grad_b = None, None, None
    ###########################################################################
    # TODO: Implement the backward pass.                                      #
    ###########################################################################
    return grad_x, grad_w, grad_b


def relu_forward(x):
    out = None
    ###########################################################################
    # TODO: Implement the ReLU forward pass.                                  #
    ###########################################################################
    cache = x
    return out, cache


def relu_backward(grad_out, cache):
    x, grad_x = cache, None
    ###########################################################################
    # TODO: Implement the ReLU backward pass.                                 #
    ###########################################################################
    return grad_x


def l2_loss(x, y):
    N = x.shape[0]
    diff = x - y
    loss = 0.5 * np.sum(diff * diff) / N
    grad_x = diff / N
    return loss, grad_x


def softmax_loss(x, y):
    loss, grad_x = None, None
    ###########################################################################
    # TODO: Implement softmax loss                                            #
    ###########################################################################
    return loss, grad_x


def l2_regularization(w, reg):
    loss, grad_w = None, None
    ###########################################################################
    # TODO: Implement L2 regularization.                                      #
    ###########################################################################
    return loss, grad_w
