"""The sandbox policy, top to bottom: every layer and limit a run of student code is put under.

A zygote (one pre-warmed interpreter per core) calls `prepare_zygote` once; every run then forks
and calls `enter_sandbox`, which returns only inside the fully isolated process. Layers that the
host cannot provide are skipped and reported, never silently assumed.

Layers, from the outside in:
  1. a separate process, its own session, file descriptors closed, output to /dev/null;
  2. namespaces, fresh per run: PID (the run is PID 1 of its own namespace: everything it starts
     dies with it, and no outside process is visible), network (no interface at all, loopback
     included), mount, IPC and UTS;
  3. a new root: read-only binds of the system libraries and the Python install, with the grader's
     own files and the assignments hidden, plus a small private tmpfs as the only writable place;
  4. an unprivileged uid per zygote, no capabilities, no_new_privs;
  5. rlimits: memory (address space), CPU seconds (soft = hard: PID 1 ignores SIGXCPU), processes,
     file size, open files, no core dumps.
"""

from __future__ import annotations

import ctypes
import os
import resource
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

# The zygote mounts its private new root over this path, in its own mount namespace only.
NEW_ROOT = "/tmp"
SCRATCH = "/tmp"  # inside the new root
SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/ld.so.cache", "/etc/localtime")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")


@dataclass
class Limits:
    """Per-run limits. Time limits are wall-clock per call; the CPU limit is a per-run backstop."""

    time_limit: float = 3.0
    import_time_limit: float = 10.0
    memory_limit_mb: int = 512
    cpu_limit: int = 60
    max_processes: int = 16
    max_file_bytes: int = 8 * 1024 * 1024
    max_open_files: int = 64
    max_output_bytes: int = 64 * 1024 * 1024
    scratch_mb: int = 16

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class IsolationConfig:
    uid: int = 61000
    hidden_paths: list[str] = field(default_factory=list)
    extra_read_paths: list[str] = field(default_factory=list)


@dataclass
class Layers:
    """Which layers hold on this host, as found when the zygote prepared itself."""

    process: bool = True
    rlimits: bool = True
    namespaces: bool = False
    new_root: bool = False
    unprivileged_uid: bool = False
    no_network: bool = False

    def to_dict(self) -> dict[str, bool]:
        return dict(self.__dict__)


class SandboxUnavailable(Exception):
    """Even the minimum isolation cannot be had on this host."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), "prctl")


class Isolation:
    def __init__(self, config: IsolationConfig) -> None:
        self.config = config
        self.layers = Layers()
        self._own_pid_ns: int | None = None

    # -- once per zygote -------------------------------------------------------------------------

    def prepare_zygote(self) -> Layers:
        if os.geteuid() == 0:
            try:
                _unshare(CLONE_NEWNS)
                _mount(None, "/", None, MS_REC | MS_PRIVATE)
                self._build_new_root()
                self.layers.new_root = True
                self.layers.namespaces = self._probe_namespaces()
                self.layers.unprivileged_uid = True
            except OSError as error:
                print(f"sandbox: new root unavailable ({error})", file=sys.stderr)
        self.layers.no_network = self.layers.namespaces
        return self.layers

    def _probe_namespaces(self) -> bool:
        pid = os.fork()
        if pid == 0:
            try:
                _unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
                os._exit(0)
            except OSError:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) == 0

    def _read_paths(self) -> list[str]:
        paths = set(SYSTEM_PATHS)
        paths.update({sys.base_prefix, sys.prefix, *self.config.extra_read_paths})
        for entry in sys.path:
            if "site-packages" in entry or "dist-packages" in entry:
                paths.add(entry)
        existing = sorted(os.path.realpath(p) if not os.path.islink(p) else p for p in paths if os.path.lexists(p))
        # keep only the outermost of nested paths
        kept: list[str] = []
        for path in existing:
            if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
                kept.append(path)
        return kept

    def _build_new_root(self) -> None:
        root = NEW_ROOT
        _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for path in self._read_paths():
            target = root + path
            if os.path.islink(path):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(os.readlink(path), target)
                continue
            self._bind(path, target, read_only=True)
        for device in DEVICES:
            if os.path.exists(device):
                self._bind(device, root + device, read_only=False)
        for hidden in self.config.hidden_paths:
            target = root + os.path.realpath(hidden)
            if os.path.isdir(target):
                _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=0555")
        os.makedirs(root + SCRATCH, mode=0o1777, exist_ok=True)
        _mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)

    def _bind(self, source: str, target: str, *, read_only: bool) -> None:
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        _mount(source, target, None, MS_BIND | MS_REC)
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if read_only else 0)
        _mount(None, target, None, flags)

    # -- once per run, in the forked child --------------------------------------------------------

    def fork_run(self) -> int:
        """Fork the process for one run: with namespaces, it is PID 1 of a PID namespace of its own,
        so everything it starts dies with it, and it can see and signal no process outside."""
        if not self.layers.namespaces:
            return os.fork()
        if self._own_pid_ns is None:
            self._own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        _unshare(CLONE_NEWPID)  # applies to the next child only; the zygote itself stays put
        pid = os.fork()
        if pid != 0:
            # back to the zygote's own namespace, so the next unshare makes a fresh one again
            _check(_libc.setns(self._own_pid_ns, CLONE_NEWPID), "setns")
        return pid

    def enter_sandbox(self, limits: Limits, keep_fds: list[int]) -> None:
        """Called in the child `fork_run` made; returns only once every layer is in force."""
        _prctl(PR_SET_PDEATHSIG, 9)  # if the zygote dies, so does the run
        os.setsid()
        if self.layers.namespaces:
            _unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
            socket.sethostname("sandbox")
            if self.layers.new_root:
                size = f"size={limits.scratch_mb}m,mode=1777,nr_inodes=256"
                _mount("tmpfs", NEW_ROOT + SCRATCH, "tmpfs", MS_NOSUID | MS_NODEV, size)
        _close_fds_except(keep_fds)
        _apply_rlimits(limits)
        if self.layers.new_root:
            os.chroot(NEW_ROOT)
            os.chdir(SCRATCH)
        if self.layers.unprivileged_uid:
            uid = self.config.uid
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_DUMPABLE, 0)


def _close_fds_except(keep: list[int]) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        if fd not in keep:
            os.dup2(null, fd)
    os.close(null)
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 65536)


def _apply_rlimits(limits: Limits) -> None:
    memory = limits.memory_limit_mb * 1024 * 1024
    # The address-space limit counts what the zygote already mapped (numpy, BLAS buffers) too.
    baseline = _address_space_bytes()
    settings = [
        (resource.RLIMIT_AS, baseline + memory),
        (resource.RLIMIT_CPU, limits.cpu_limit),
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_FSIZE, limits.max_file_bytes),
        (resource.RLIMIT_NOFILE, limits.max_open_files),
        (resource.RLIMIT_CORE, 0),
    ]
    for which, value in settings:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
