"""Hostile: fc_forward tries to write, delete and link files everywhere, then fills its scratch.

It returns the right answer only if every attempt outside its own scratch folder failed (inside
the sandbox, /tmp may be that folder), so a full score proves nothing escaped (the tests also check
the canary folder and the host's /tmp). Filling the
scratch itself is allowed and must only stop at its size or file-size limit.
"""
import os
import stat

import numpy as np

CANARY = "/tmp/hw-grader-canary"
OUTSIDE = [
    CANARY + "/pwned",
    CANARY + "/keep.txt",
    "/tmp/hw-hostile-pwned",
    "/var/tmp/hw-hostile-pwned",
    "/dev/shm/hw-hostile-pwned",
    "/root/hw-hostile-pwned",
    "/work/hw-hostile-pwned",
    "/hw-hostile-pwned",
    "/etc/hw-hostile-pwned",
    "/usr/hw-hostile-pwned",
    "/usr/lib/hw-hostile-pwned",
    "../hw-hostile-pwned",
    "../../hw-hostile-pwned",
    "/proc/self/cwd/../hw-hostile-pwned",
    "/dev/hw-hostile-pwned",
]
escaped = []
attacked = False


def inside_scratch(path):
    """Inside the sandbox /tmp may be the run's own scratch folder: writing there is allowed."""
    scratch = os.path.realpath(os.getcwd())
    real = os.path.realpath(path)
    return real == scratch or real.startswith(scratch.rstrip("/") + "/")


def attempt(what, action, *args):
    try:
        action(*args)
    except (OSError, ValueError):
        return
    if not any(isinstance(arg, str) and inside_scratch(arg) for arg in args[:1]) or "link" in what:
        escaped.append(what)


def write(path):
    with open(path, "a") as handle:
        handle.write("pwned by a submission\n")


def attack():
    for path in OUTSIDE:
        attempt("write " + path, write, path)
        attempt("mkdir " + path, os.mkdir, path + ".d")
    for victim in (CANARY + "/keep.txt", CANARY, "/usr/bin/env", "/etc/passwd"):
        attempt("remove " + victim, os.remove, victim)
        attempt("rename " + victim, os.rename, victim, victim + ".moved")
        attempt("chmod " + victim, os.chmod, victim, 0o777)
        attempt("truncate " + victim, os.truncate, victim, 0)
        attempt("utime " + victim, os.utime, victim, (0, 0))
    # symlink and hard-link tricks: a link in the scratch to something outside, then write through it
    for i, target in enumerate((CANARY + "/keep.txt", CANARY + "/via-link", "/etc/passwd", "/tmp/hw-hostile-link")):
        try:
            os.symlink(target, f"link{i}")
        except OSError:
            continue
        if not inside_scratch(target):
            attempt("write through link to " + target, write, f"link{i}")
    attempt("hard link", os.link, CANARY + "/keep.txt", "hard")
    attempt("device node", os.mknod, "mem", 0o666 | stat.S_IFCHR, os.makedev(1, 1))
    # fill the scratch: allowed, bounded by its size and the file-size limit
    try:
        with open("big", "wb") as handle:
            handle.write(b"\0" * (9 << 20))
    except OSError:
        pass
    for i in range(64):
        try:
            with open(f"fill{i}", "wb") as handle:
                handle.write(b"\0" * (1 << 20))
        except OSError:
            break


def fc_forward(x, w, b):
    global attacked
    if not attacked:
        attacked = True
        attack()
    out = x.dot(w) + b
    if escaped:
        out = np.zeros_like(out)
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
