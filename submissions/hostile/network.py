"""Hostile: fc_backward tries every way onto the network, loopback included, then answers.

TCP to the test's listener and to the services running on the host (PostgreSQL, Redis, MariaDB,
RabbitMQ, ...), UDP, IPv6, unix sockets on disk and abstract ones, raw and netlink sockets, and a DNS
lookup. It returns the right answer only if every attempt failed, so a full score means no packet
left (the tests also check that nothing arrived at their TCP, UDP and unix listeners).
"""
import socket

import numpy as np

PORT = 47391
TCP_PORTS = [PORT, 5432, 6379, 3306, 5672, 15672, 4222, 1883, 22, 80, 443, 2024, 8000]
UNIX_PATHS = [
    "/tmp/hw-grader-canary/listener.sock", "/var/run/postgresql/.s.PGSQL.5432", "/run/mysqld/mysqld.sock",
    "/var/run/docker.sock", "/run/docker.sock", "/var/run/redis/redis-server.sock", "/run/dbus/system_bus_socket",
]
reached = []
tried = False


def attempt(what, action):
    try:
        action()
    except (OSError, ValueError):
        return
    reached.append(what)


def tcp(host, port, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        sock.connect((host, port))
        sock.sendall(b"hostile submission\n")


def udp(host, port, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"hostile submission\n", (host, port))


def unix(path, kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_UNIX, kind) as sock:
        sock.settimeout(0.3)
        sock.connect(path)
        sock.sendall(b"hostile submission\n")


def reach_out():
    for port in TCP_PORTS:
        attempt(f"tcp 127.0.0.1:{port}", lambda port=port: tcp("127.0.0.1", port))
    attempt("tcp6 ::1", lambda: tcp("::1", PORT, socket.AF_INET6))
    attempt("udp 127.0.0.1", lambda: udp("127.0.0.1", PORT))
    attempt("udp 255.255.255.255", lambda: udp("255.255.255.255", PORT))
    attempt("udp6 ::1", lambda: udp("::1", PORT, socket.AF_INET6))
    for path in UNIX_PATHS:
        attempt("unix " + path, lambda path=path: unix(path))
    attempt("abstract unix", lambda: unix("\0hw-grader-canary"))
    attempt("abstract unix dgram", lambda: unix("\0hw-grader-canary-dgram", socket.SOCK_DGRAM))
    attempt("dns", lambda: socket.getaddrinfo("pypi.org", 443))
    attempt("raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close())
    attempt("packet socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())
    attempt("netlink socket", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close())
    attempt("bind a port", lambda: socket.create_server(("127.0.0.1", PORT + 1)).close())


def fc_forward(x, w, b):
    out = x.dot(w) + b
    cache = (x, w, b)
    return out, cache


def fc_backward(grad_out, cache):
    global tried
    if not tried:
        tried = True
        reach_out()
    x, w, b = cache
    grad_x = grad_out.dot(w.T)
    grad_w = x.T.dot(grad_out)
    grad_b = np.sum(grad_out, axis=0)
    if reached:
        raise ConnectionError("reached " + ", ".join(reached))
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
