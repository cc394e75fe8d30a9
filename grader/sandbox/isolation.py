"""The sandbox policy, top to bottom: every layer and limit a run of student code is put under.

A zygote (one pre-warmed interpreter per core) calls `Isolation.prepare_zygote` once: it finds out
which layers this host allows and builds once what can be built once (the new root, the cgroups, the
Landlock ruleset, the compiled seccomp filter). Every run is then forked by `fork_run` (in the
zygote's forker, a copy of it that does nothing else) and calls, in the child,
`enter_sandbox`, which returns only inside the fully isolated process or not at all. A layer the
host refuses is recorded in `Layers` with the reason, never silently assumed; the pool refuses to
grade without the minimum (a separate process, rlimits and no network) unless told to run insecurely.

Layers, from the outside in (the names `pool.layers` and `grader doctor` report):
  process            a process per run: its own session, only the result pipe left open, stdin and
                     output on /dev/null, killed if its forker (and so its zygote) dies;
  rlimits            address space, CPU seconds (soft = hard: PID 1 ignores SIGXCPU), processes,
                     file size, open files, no core dumps;
  user_namespace     only where the grader is not root: an unprivileged user namespace gives the
                     zygote what it needs to build the namespaces and the new root below;
  pid_namespace      fresh per run; the run is PID 1 of it: everything it starts dies with it, and
                     it can see and signal no process outside;
  network_namespace  with no interface at all (loopback down), and abstract unix sockets of its own;
  mount_namespace    with IPC and UTS namespaces too; these three are the zygote's, shared by its
                     runs, where seccomp leaves a run no way to put anything in them (see
                     `_settle_namespaces`), and fresh per run otherwise;
  new_root           a read-only root of the system libraries and the Python install only, with the
                     grader's code and the assignments hidden, no /proc, /sys or /dev beyond
                     null/zero/random, and a small tmpfs scratch as the only writable place;
  cgroup_memory      one memory cgroup per zygote (limit: the memory limit plus the scratch),
                     emptied after every run; a breach is reported as the memory limit;
  cgroup_pids        one pids cgroup per zygote: a cap on processes and threads together;
  unprivileged_uid   a uid of its own per zygote (61000 + index), no groups, no capabilities;
                     where no uid can be had, capabilities are dropped all the same;
  no_new_privs       no privilege from any executable, and no way back from the filters below;
  landlock           reads only of the system libraries, the Python install and three devices,
                     writes only in the scratch; no TCP bind or connect (ABI 4); no signals to
                     processes outside the run and no abstract unix sockets outside it (ABI 6);
  seccomp            the system calls in DENIED below fail: no sockets at all (so no network even
                     without a network namespace), no tracing, no io_uring, no keyrings, no new
                     namespaces, no mounts, no exec, no chmod/utime/xattr, no IPC objects, ...;
                     where no PID namespace or cgroup holds a run's processes, no processes either;
                     where no PID namespace hides the others, signals, rlimits and priorities only
                     of itself;
  no_network         the minimum: a network namespace or seccomp's socket ban (both, normally).

Scratch (the run's working directory, HOME and TMPDIR): with the new root, a tmpfs of the zygote's
mounted at /tmp inside it; otherwise a folder under the temporary directory. Either way the zygote
empties it after every run, and Landlock makes it the only writable place. (Landlock skips the
directory a mount hides, so its rule is on the root of a mount that lives as long as the zygote.)
"""

from __future__ import annotations

import errno
import os
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from grader.sandbox import kernel
from grader.sandbox.cgroups import ZygoteCgroups
from grader.sandbox.kernel import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
)


@dataclass
class Limits:
    """Per-run limits. Time limits are wall-clock per call; the CPU limit is a per-run backstop."""

    time_limit: float = 3.0  # seconds of wall time per call of a student function
    import_time_limit: float = 10.0  # seconds of wall time to import the submission
    memory_limit_mb: int = 512  # address space beyond what the forker had mapped, and the cgroup
    cpu_limit: int = 60  # CPU seconds for the whole run
    max_processes: int = 16  # processes and threads, the run itself included
    max_file_bytes: int = 8 * 1024 * 1024  # largest file it may write
    max_open_files: int = 64  # file descriptors
    max_output_bytes: int = 16 * 1024 * 1024  # result bytes a run may send back in all
    scratch_mb: int = 16  # size of the private tmpfs

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- what a run can see -----------------------------------------------------------------------------

# The zygote mounts its private new root over this path, in its own mount namespace only.
NEW_ROOT = "/tmp"  # noqa: S108 - over the zygote's own /tmp, seen by nothing else
SCRATCH = "/tmp"  # noqa: S108 - inside the new root, unless the Python install itself lives under /tmp
SCRATCH_BESIDE_TMP = "/.scratch"  # then the scratch goes here, so it does not cover the install
SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/ld.so.cache", "/etc/localtime")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
RUN_HOSTNAME = "sandbox"

# Landlock rights: everything handled is denied unless a rule below grants it.
READ_RIGHTS = kernel.FS_READ_FILE | kernel.FS_READ_DIR | kernel.FS_EXECUTE
DEVICE_RIGHTS = kernel.FS_READ_FILE | kernel.FS_WRITE_FILE
LANDLOCK_NET = kernel.NET_BIND_TCP | kernel.NET_CONNECT_TCP  # handled, never granted
LANDLOCK_SCOPES = kernel.SCOPE_ABSTRACT_UNIX_SOCKET | kernel.SCOPE_SIGNAL

# -- what a run may ask of the kernel -------------------------------------------------------------

EPERM = errno.EPERM
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
PER_QUERY = 0xFFFFFFFF  # personality(0xffffffff) only reads the persona
# Who gets a descriptor's SIGIO (and which signal it is): set, they would let a run signal another
# process group (with F_SETSIG, SIGKILL) whenever its pipe is written, past the kill rules below.
F_SETOWN, F_SETSIG, F_SETOWN_EX = 8, 10, 15
FIOSETOWN, SIOCSPGRP = 0x8901, 0x8902
# Syscalls a run may not make at all (they fail with EPERM), and why.
DENIED: dict[str, str] = {
    "socket": "no network of any kind: TCP, UDP, unix, netlink, raw",
    "ptrace": "no tracing or memory access of another process",
    "process_vm_readv": "no tracing or memory access of another process",
    "process_vm_writev": "no tracing or memory access of another process",
    "kcmp": "no probing of other processes' kernel objects",
    "pidfd_getfd": "no stealing of another process's file descriptors",
    "io_uring_setup": "io_uring performs file and socket operations out of seccomp's sight",
    "io_uring_enter": "io_uring performs file and socket operations out of seccomp's sight",
    "io_uring_register": "io_uring performs file and socket operations out of seccomp's sight",
    "userfaultfd": "a common ingredient of kernel exploits; numpy never needs it",
    "keyctl": "the kernel keyrings are not namespaced",
    "add_key": "the kernel keyrings are not namespaced",
    "request_key": "the kernel keyrings are not namespaced",
    "unshare": "no new namespaces: a user namespace would hand back capabilities",
    "setns": "no entering other namespaces",
    "mount": "no changes to what the run sees",
    "umount2": "no changes to what the run sees",
    "pivot_root": "no changes to what the run sees",
    "chroot": "no changes to what the run sees",
    "move_mount": "no changes to what the run sees",
    "open_tree": "no changes to what the run sees",
    "fsopen": "no changes to what the run sees",
    "fsconfig": "no changes to what the run sees",
    "fsmount": "no changes to what the run sees",
    "fspick": "no changes to what the run sees",
    "mount_setattr": "no changes to what the run sees",
    "open_by_handle_at": "file handles bypass the paths Landlock and the new root restrict",
    "name_to_handle_at": "file handles bypass the paths Landlock and the new root restrict",
    "execve": "no other programs: a run is the harness and the student's Python",
    "execveat": "no other programs: a run is the harness and the student's Python",
    **dict.fromkeys(
        ("chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime", "utimes",
         "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
         "fremovexattr"),
        "no changing file modes, owners, times or attributes: Landlock does not cover them, and where the "
        "run shares the grader's uid they would reach the grader's files",
    ),
    **dict.fromkeys(
        ("shmget", "shmat", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget", "msgsnd", "msgrcv",
         "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr"),
        "no System V or POSIX IPC objects, which without an IPC namespace are the host's",
    ),
    "setsid": "the run's process group stays the run's",
    "setpgid": "the run's process group stays the run's",
    "bpf": "kernel attack surface with no use in a homework",
    "modify_ldt": "kernel attack surface with no use in a homework",
    "memfd_secret": "kernel attack surface with no use in a homework",
    **dict.fromkeys(
        ("io_setup", "io_submit", "io_getevents", "io_pgetevents", "io_cancel", "io_destroy"),
        "Linux AIO: kernel attack surface with no use in a homework",
    ),
    "listmount": "no survey of the mounts (what the new root shows is all a run needs)",
    "statmount": "no survey of the mounts (what the new root shows is all a run needs)",
    "perf_event_open": "kernel attack surface with no use in a homework",
    "fanotify_init": "kernel attack surface with no use in a homework",
    "lookup_dcookie": "kernel attack surface with no use in a homework",
    "vhangup": "kernel attack surface with no use in a homework",
    "uselib": "kernel attack surface with no use in a homework",
    "kexec_load": "host administration",
    "kexec_file_load": "host administration",
    "reboot": "host administration",
    "init_module": "host administration",
    "finit_module": "host administration",
    "delete_module": "host administration",
    "swapon": "host administration",
    "swapoff": "host administration",
    "acct": "host administration",
    "quotactl": "host administration",
    "quotactl_fd": "host administration",
    "syslog": "host administration",
    "settimeofday": "host administration",
    "clock_settime": "host administration",
    "clock_adjtime": "host administration",
    "adjtimex": "host administration",
    "sethostname": "host administration",
    "setdomainname": "host administration",
    "iopl": "host administration",
    "ioperm": "host administration",
}
# Calls denied only with some arguments: (syscall, [(argument, operator, datum, datum2)], why).
DENIED_WITH_ARGUMENTS: list[tuple[str, list[tuple[int, int, int, int]], str]] = [
    *(
        ("clone", [(0, kernel.CMP_MASKED_EQ, flag, flag)], "no new namespaces through clone")
        for flag in kernel.NAMESPACE_FLAGS
    ),
    ("ioctl", [(1, kernel.CMP_MASKED_EQ, 0xFFFFFFFF, TIOCSTI)], "no typing into a terminal"),
    ("ioctl", [(1, kernel.CMP_MASKED_EQ, 0xFFFFFFFF, TIOCLINUX)], "no typing into a terminal"),
    *(
        ("fcntl", [(1, kernel.CMP_MASKED_EQ, 0xFFFFFFFF, command)], "no signals to others through SIGIO")
        for command in (F_SETOWN, F_SETSIG, F_SETOWN_EX)
    ),
    *(
        ("ioctl", [(1, kernel.CMP_MASKED_EQ, 0xFFFFFFFF, command)], "no signals to others through SIGIO")
        for command in (FIOSETOWN, SIOCSPGRP)
    ),
    ("personality", [(0, kernel.CMP_NE, PER_QUERY, 0)], "no turning off address randomization"),
    # prctl's option is an int: masked, so that high bits set above it cannot slip past
    ("prctl", [(0, kernel.CMP_MASKED_EQ, 0xFFFFFFFF, kernel.PR_SET_PDEATHSIG)], "the run must die with its forker"),
]
# clone3 passes its flags in memory seccomp cannot read: it fails as unknown, so glibc uses clone.
ENOSYS_SYSCALLS = ("clone3",)
# Syscalls newer than this policy (x86-64 numbers above this) fail as unknown rather than run.
NEWEST_KNOWN_SYSCALL = 462
# Without a PID namespace or a pids cgroup to hold them, a run may start no processes (threads are
# fine: they die with it). Without a PID namespace, other processes are in sight: a run may signal
# only its own process group, and change limits, priorities and scheduling only of itself.
NO_PROCESSES: list[tuple[str, list[tuple[int, int, int, int]]]] = [
    ("fork", []),
    ("vfork", []),
    ("clone", [(0, kernel.CMP_MASKED_EQ, kernel.CLONE_THREAD, 0)]),
]
ONLY_ITSELF: list[tuple[str, list[tuple[int, int, int, int]]]] = [
    ("kill", [(0, kernel.CMP_NE, 0, 0)]),
    ("tkill", []),
    ("tgkill", []),
    ("rt_sigqueueinfo", []),
    ("rt_tgsigqueueinfo", []),
    ("pidfd_open", []),
    ("pidfd_send_signal", []),
    ("prlimit64", [(0, kernel.CMP_NE, 0, 0)]),
    ("setpriority", [(1, kernel.CMP_NE, 0, 0)]),
    ("ioprio_set", [(1, kernel.CMP_NE, 0, 0)]),
    ("sched_setaffinity", [(0, kernel.CMP_NE, 0, 0)]),
    ("sched_setscheduler", [(0, kernel.CMP_NE, 0, 0)]),
    ("sched_setparam", [(0, kernel.CMP_NE, 0, 0)]),
    ("sched_setattr", [(0, kernel.CMP_NE, 0, 0)]),
    ("migrate_pages", []),
    ("move_pages", [(0, kernel.CMP_NE, 0, 0)]),
    ("process_madvise", []),
    ("process_mrelease", []),
]

# The order `grader doctor` prints them in.
LAYER_NAMES = (
    "process", "rlimits", "user_namespace", "pid_namespace", "network_namespace", "mount_namespace",
    "new_root", "cgroup_memory", "cgroup_pids", "unprivileged_uid", "no_new_privs", "landlock", "seccomp",
    "no_network",
)
MINIMUM = ("process", "rlimits", "no_network")


@dataclass
class IsolationConfig:
    uid: int = 61000
    hidden_paths: list[str] = field(default_factory=list)
    extra_read_paths: list[str] = field(default_factory=list)
    cgroup_name: str = ""  # "hw-grader.<pool pid>.<index>"; empty: no cgroups
    scratch_base: str = ""  # a zygote's folder of run scratch when no private tmpfs can be had


@dataclass
class Layers:
    """Which layers hold on this host, as found when the zygote prepared itself, and why not."""

    held: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(LAYER_NAMES, False))
    notes: dict[str, str] = field(default_factory=dict)

    def set(self, layer: str, on: bool, note: str = "") -> None:
        self.held[layer] = on
        if note:
            self.notes[layer] = note

    def __getitem__(self, layer: str) -> bool:
        return self.held[layer]

    def to_dict(self) -> dict[str, Any]:
        return {"held": dict(self.held), "notes": dict(self.notes)}


class SandboxUnavailable(Exception):
    """Even the minimum isolation cannot be had on this host."""


class SandboxSetupFailed(Exception):
    """A layer that held when the zygote started could not be applied to a run."""


class Isolation:
    def __init__(self, config: IsolationConfig) -> None:
        self.config = config
        self.layers = Layers()
        self.run_namespaces = 0  # unshare flags each run gets (besides the PID namespace)
        self.pid_mode = ""  # "setns": the forker unshares and steps back; "nested": an extra fork
        self.cgroups: ZygoteCgroups | None = None
        self.landlock_ruleset: int | None = None
        self.seccomp: kernel.SeccompProgram | None = None
        self.address_space = 0  # bytes the forker has mapped, which a run inherits
        self.one_thread = False  # whether the forker has one thread only (then it forks the bare way)
        self.scratch = ""  # the run's scratch folder, as the zygote sees it
        self.scratch_in_root = SCRATCH  # the same folder, as the run sees it inside the new root
        self.scratch_size_mb = 0
        self._own_pid_ns: int | None = None

    # -- once per zygote -------------------------------------------------------------------------

    def prepare_zygote(self) -> Layers:
        # What this process imports later must be loaded first: once the new root covers /tmp, a
        # virtualenv there is out of the zygote's own sight (its runs still see it, bound in).
        kernel.load_seccomp_library()
        layers = self.layers
        layers.set("process", True)
        layers.set("rlimits", True)
        capabilities = kernel.effective_capabilities()
        privileged = kernel.has_capability(capabilities, kernel.CAP_SYS_ADMIN)
        if privileged:
            layers.set("user_namespace", False, "not needed: the grader can build namespaces itself")
        else:
            privileged = self._enter_user_namespace()
        if privileged:
            self._probe_namespaces()
            if layers["mount_namespace"]:
                self._prepare_new_root()
        else:
            for layer in ("pid_namespace", "network_namespace", "mount_namespace", "new_root"):
                layers.set(layer, False, "needs root or a user namespace")
        self._prepare_cgroups(in_user_namespace=layers["user_namespace"])
        can_setuid = (
            not layers["user_namespace"]
            and kernel.has_capability(capabilities, kernel.CAP_SETUID)
            and kernel.has_capability(capabilities, kernel.CAP_SETGID)
        )
        if can_setuid:
            layers.set("unprivileged_uid", True, f"uid {self.config.uid}")
        else:
            layers.set("unprivileged_uid", False, "cannot change uid here; capabilities are dropped instead")
        layers.set("no_new_privs", True)
        if not layers["new_root"]:
            self._prepare_scratch_base(can_setuid)
        self._prepare_landlock()
        self._prepare_seccomp()
        self._settle_namespaces()
        layers.set("no_network", layers["network_namespace"] or layers["seccomp"])
        return layers

    def _settle_namespaces(self) -> None:
        """Where seccomp holds, one network, IPC, UTS and mount namespace serves all of a zygote's runs:
        a run can put nothing in them for the next to find (no sockets beyond an unnamed pair, no IPC
        objects, no hostname, no mounts), and making them costs a millisecond a run. Without seccomp,
        every run gets fresh ones. The PID namespace is always fresh: it is what ends a run's processes."""
        if not self.run_namespaces or not self.layers["seccomp"]:
            if self.run_namespaces:
                self.layers.notes["network_namespace"] = "fresh per run, no interface"
            return
        kernel.unshare(self.run_namespaces & ~CLONE_NEWNS)  # the zygote has a mount namespace already
        if self.run_namespaces & CLONE_NEWUTS:
            socket.sethostname(RUN_HOSTNAME)
        if self.run_namespaces & CLONE_NEWNET:
            self.layers.notes["network_namespace"] = "one per zygote, no interface (runs cannot open sockets)"
        if self.run_namespaces & CLONE_NEWNS:
            self.layers.notes["mount_namespace"] = "one per zygote, with IPC and UTS (runs cannot change them)"
        self.run_namespaces = 0

    def _enter_user_namespace(self) -> bool:
        uid, gid = os.geteuid(), os.getegid()
        try:
            kernel.unshare(CLONE_NEWUSER)
            kernel.map_root_to(uid, gid)
        except OSError as error:
            self.layers.set("user_namespace", False, f"unavailable ({error.strerror})")
            return False
        self.layers.set("user_namespace", True, f"root inside, uid {uid} outside")
        return True

    def _probe_namespaces(self) -> None:
        """Try each namespace in a throwaway child: a failed unshare must not touch the zygote."""
        wanted = {"network_namespace": CLONE_NEWNET, "mount_namespace": CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS}
        for layer, flags in wanted.items():
            ok, reason = _in_child(lambda flags=flags: kernel.unshare(flags))
            self.layers.set(layer, ok, "" if ok else f"unavailable ({reason})")
            if ok:
                self.run_namespaces |= flags
        if _in_child(self._pid_setns_round_trip)[0]:
            self.pid_mode = "setns"
        elif _in_child(_pid_nested)[0]:
            self.pid_mode = "nested"
        else:
            self.layers.set("pid_namespace", False, "unavailable")
            return
        extra = "" if self.pid_mode == "setns" else " (with an extra fork per run)"
        self.layers.set("pid_namespace", True, "fresh per run" + extra)
        if self.layers["mount_namespace"]:
            # the zygote keeps a mount namespace of its own, holding the new root
            kernel.unshare(CLONE_NEWNS)
            kernel.mount(None, "/", None, MS_REC | MS_PRIVATE)

    def _pid_setns_round_trip(self) -> None:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        kernel.unshare(CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        kernel.setns(own, CLONE_NEWPID)

    def _read_paths(self) -> list[str]:
        paths = set(SYSTEM_PATHS)
        paths.update({sys.base_prefix, sys.prefix, *self.config.extra_read_paths})
        for entry in sys.path:
            if "site-packages" in entry or "dist-packages" in entry:
                paths.add(entry)
        existing = sorted(os.path.realpath(p) if not os.path.islink(p) else p for p in paths if os.path.lexists(p))
        kept: list[str] = []  # only the outermost of nested paths
        for path in existing:
            if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
                kept.append(path)
        return kept

    def _prepare_new_root(self) -> None:
        try:
            self._build_new_root()
        except OSError as error:
            self.layers.set("new_root", False, f"unavailable ({error})")
            return
        self.layers.set("new_root", True, "read-only, with a tmpfs scratch emptied after every run")

    def _build_new_root(self) -> None:
        root = NEW_ROOT
        read_paths = self._read_paths()
        # Open every source before the new root's tmpfs covers /tmp: a virtualenv under /tmp is then
        # still bound, through its descriptor.
        sources = {path: _open_path(path) for path in [*read_paths, *DEVICES] if not os.path.islink(path)}
        under_tmp = any(p == SCRATCH or p.startswith(SCRATCH + "/") for p in read_paths)
        self.scratch_in_root = SCRATCH_BESIDE_TMP if under_tmp else SCRATCH
        try:
            kernel.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
            for path in read_paths:
                target = root + path
                if os.path.islink(path):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.symlink(os.readlink(path), target)
                    continue
                _bind(sources[path], target, read_only=True)
            for device in DEVICES:
                if device in sources:
                    _bind(sources[device], root + device, read_only=False)
        finally:
            for descriptor in sources.values():
                os.close(descriptor)
        for hidden in self.config.hidden_paths:
            target = root + os.path.realpath(hidden)
            if os.path.isdir(target):
                kernel.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=0555")
            elif os.path.isfile(target):  # a module that is one file (six.py, a .so): a file that cannot be read
                null = root + "/dev/null"
                kernel.mount(null, target, None, MS_BIND)
                kernel.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
                             | kernel.locked_mount_flags(null))
        os.makedirs(root + self.scratch_in_root, mode=0o1777, exist_ok=True)
        kernel.mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        self.scratch = root + self.scratch_in_root
        self._mount_scratch(Limits().scratch_mb)

    def _mount_scratch(self, size_mb: int) -> None:
        flags = MS_NOSUID | MS_NODEV | (MS_REMOUNT if self.scratch_size_mb else 0)
        kernel.mount("tmpfs", self.scratch, "tmpfs", flags, f"size={size_mb}m,mode=1777,nr_inodes=256")
        self.scratch_size_mb = size_mb

    def _prepare_cgroups(self, *, in_user_namespace: bool) -> None:
        if not self.config.cgroup_name:
            for layer in ("cgroup_memory", "cgroup_pids"):
                self.layers.set(layer, False, "not requested")
            return
        self.cgroups = ZygoteCgroups.create(self.config.cgroup_name)
        for controller in ("memory", "pids"):
            path = getattr(self.cgroups, controller)
            version = self.cgroups.versions.get(controller)
            note = f"cgroup v{version}, one per zygote" if path else self.cgroups.notes.get(controller, "")
            self.layers.set(f"cgroup_{controller}", bool(path), note)

    def _prepare_scratch_base(self, owned_by_run_uid: bool) -> None:
        if not self.config.scratch_base:
            return
        os.makedirs(self.config.scratch_base, mode=0o700, exist_ok=True)
        self.scratch = self.config.scratch_base
        if owned_by_run_uid:
            os.chown(self.scratch, self.config.uid, self.config.uid)

    def _prepare_landlock(self) -> None:
        abi = kernel.landlock_abi()
        if abi < 1:
            self.layers.set("landlock", False, "not offered by this kernel (or hidden by a seccomp filter)")
            return
        handled = kernel.landlock_handled_fs(abi)
        try:
            ruleset = kernel.landlock_create_ruleset(abi, handled, LANDLOCK_NET, LANDLOCK_SCOPES)
            if self.layers["new_root"]:
                kernel.landlock_allow_beneath(ruleset, NEW_ROOT, READ_RIGHTS)
                kernel.landlock_allow_beneath(ruleset, self.scratch, handled)
                for device in DEVICES:
                    if os.path.exists(NEW_ROOT + device):
                        kernel.landlock_allow_beneath(ruleset, NEW_ROOT + device, DEVICE_RIGHTS)
            else:
                for path, rights in _readable_without_hidden(self._read_paths(), self.config.hidden_paths):
                    kernel.landlock_allow_beneath(ruleset, path, rights)
                for device in DEVICES:
                    if os.path.exists(device):
                        kernel.landlock_allow_beneath(ruleset, device, DEVICE_RIGHTS)
                if self.scratch:
                    kernel.landlock_allow_beneath(ruleset, self.scratch, handled)
        except OSError as error:
            self.layers.set("landlock", False, f"unavailable ({error})")
            return
        ok, reason = _in_child(lambda: _restrict_with(ruleset))  # a seccomp filter above us may refuse it
        if not ok:
            os.close(ruleset)
            self.layers.set("landlock", False, f"cannot be applied here ({reason})")
            return
        self.landlock_ruleset = ruleset
        covers = ["files"]
        if abi >= 4:
            covers.append("TCP bind and connect")
        if abi >= 6:
            covers.append("signals and abstract unix sockets")
        self.layers.set("landlock", True, f"ABI {abi}: " + ", ".join(covers))

    def _prepare_seccomp(self) -> None:
        contained = self.layers["pid_namespace"] or self.layers["cgroup_pids"]
        rules: list[tuple[str | int, int, tuple[tuple[int, int, int, int], ...]]] = []
        rules += [(name, EPERM, ()) for name in DENIED]
        rules += [(name, EPERM, tuple(args)) for name, args, _why in DENIED_WITH_ARGUMENTS]
        rules += [(name, errno.ENOSYS, ()) for name in ENOSYS_SYSCALLS]
        if not contained:
            rules += [(name, EPERM, tuple(args)) for name, args in NO_PROCESSES]
        if not self.layers["pid_namespace"]:
            rules += [(name, EPERM, tuple(args)) for name, args in ONLY_ITSELF]
        try:
            program = kernel.compile_seccomp(rules, newest_syscall=NEWEST_KNOWN_SYSCALL)
        except (ImportError, OSError, ValueError) as error:
            self.layers.set("seccomp", False, f"unavailable ({error}); install libseccomp2 and pyseccomp")
            return
        ok, reason = _in_child(lambda: _filter_with(program))  # the host may refuse filters altogether
        if not ok:
            self.layers.set("seccomp", False, f"cannot be applied here ({reason})")
            return
        self.seccomp = program
        extra = "" if contained else "; no processes"
        extra += "" if self.layers["pid_namespace"] else "; signals and limits only within the run"
        self.layers.set("seccomp", True, f"{program.instructions} BPF instructions{extra}")

    # -- once per run, in the zygote ----------------------------------------------------------------

    def measure_address_space(self) -> None:
        """Done once by each forker, as it starts (what it has mapped is what its runs inherit; the
        zygote's job arena is not among it), not per run: reading it costs a run half a millisecond."""
        self.address_space = _address_space_bytes()

    def count_threads(self) -> None:
        """Done once by each forker, as it starts: whether it has one thread (it starts none later)."""
        try:
            self.one_thread = len(os.listdir("/proc/self/task")) == 1
        except OSError:
            self.one_thread = False

    @property
    def run_scratch(self) -> str:
        """The runs' scratch folder as a run sees it (its working directory), or "" if there is none."""
        return self.scratch_in_root if self.layers["new_root"] else self.scratch

    def set_run_environment(self) -> None:
        """Point HOME, TMPDIR and MPLCONFIGDIR at the runs' scratch, as the runs see it, once in the
        zygote (its runs inherit them; setting them in each run cost it 30 page copies). Called after
        the zygote's own imports, which must not find them."""
        scratch = self.run_scratch
        if scratch:
            for name in ("HOME", "TMPDIR", "MPLCONFIGDIR"):
                os.environ[name] = scratch
            tempfile.tempdir = None  # found again from TMPDIR by a run that asks (the zygote asked before)

    def before_run(self, limits: Limits) -> None:
        """Ready the cgroups and the scratch for the next run's limits."""
        if self.cgroups is not None:
            memory = (limits.memory_limit_mb + limits.scratch_mb + CGROUP_HEADROOM_MB) * 1024 * 1024
            self.cgroups.set_limits(memory, limits.max_processes)
        if self.layers["new_root"] and limits.scratch_mb != self.scratch_size_mb:
            self._mount_scratch(limits.scratch_mb)

    def after_run(self) -> None:
        """Make sure nothing of the run outlives it: processes, zombies, scratch files."""
        if self.cgroups is not None and not self.layers["pid_namespace"]:
            self.cgroups.kill_all()
        _reap_orphans()
        # emptied by a walk of descriptors, not remounted: Landlock's write rule names this very mount
        if self.scratch:
            empty_folder(self.scratch, 0o1777 if self.layers["new_root"] else 0o700)

    def oom_kills(self) -> int:
        return self.cgroups.oom_kills() if self.cgroups is not None else 0

    def fork_run(self) -> int:
        """Fork the process for one run: with a PID namespace, it is PID 1 of a namespace of its
        own, so everything it starts dies with it and it can see or signal no process outside."""
        if self.pid_mode == "setns":
            if self._own_pid_ns is None:
                self._own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            kernel.unshare(CLONE_NEWPID)  # applies to the next child only; the forker itself stays put
            pid = self._fork()
            if pid != 0:
                # back to the forker's own namespace, so the next unshare makes a fresh one again
                kernel.setns(self._own_pid_ns, CLONE_NEWPID)
            return pid
        pid = self._fork()
        if pid == 0 and self.pid_mode == "nested":  # pragma: no cover - runs in the child
            _become_pid_namespace_parent()
        return pid

    def _fork(self) -> int:
        # a forker is one thread, holding the GIL, not importing: CPython's after-fork work (0.3 ms of
        # a run here) is for processes with more
        return kernel.fork_bare() if self.one_thread else os.fork()

    # -- once per run, in the child -----------------------------------------------------------------

    def enter_sandbox(self, limits: Limits, keep_fds: list[int], parent: int | None = None) -> None:
        """Called in the child `fork_run` made; returns only once every layer that held is in force.
        `parent`, a pidfd of the forker: the run exits if the forker has ended before it is sure to
        die with it."""
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)  # if the forker dies, so does the run
        os.setsid()
        if self.cgroups is not None:
            self.cgroups.join()
        if self.run_namespaces:
            kernel.unshare(self.run_namespaces)
            if self.run_namespaces & CLONE_NEWUTS:
                socket.sethostname(RUN_HOSTNAME)
        scratch = self.run_scratch
        ruleset = self.landlock_ruleset
        _close_fds_except([*keep_fds, *(fd for fd in (ruleset, parent) if fd is not None)])
        _apply_rlimits(limits, self.address_space)
        if self.layers["new_root"]:
            os.chroot(NEW_ROOT)
        os.chdir(scratch or "/")  # HOME and TMPDIR name it already (set_run_environment)
        if self.layers["unprivileged_uid"]:
            uid = self.config.uid
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        else:
            kernel.drop_all_capabilities()
        # a change of credentials clears the parent-death signal: set again, then make sure the forker
        # did not end before (the signal would never come)
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent is not None:
            if select.select([parent], [], [], 0)[0]:
                os._exit(0)
            os.close(parent)
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
        if ruleset is not None:
            kernel.landlock_restrict_self(ruleset)
            os.close(ruleset)
        if self.seccomp is not None:
            self.seccomp.apply()  # last: it forbids much of what the steps above needed

    # -- when the zygote exits ------------------------------------------------------------------------

    def close(self) -> None:
        _reap_orphans(wait_seconds=2.0)  # a killed run's processes may still be on their way out
        if self.cgroups is not None:
            self.cgroups.close()
        if self.config.scratch_base and os.path.lexists(self.config.scratch_base):
            remove_tree(self.config.scratch_base)


# Room in the memory cgroup beyond the limit for the pages a run copies from its zygote on write.
CGROUP_HEADROOM_MB = 48


def _in_child(action: Any) -> tuple[bool, str]:
    """Run `action` in a throwaway child; (whether it worked, the error if not)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        try:
            action()
            os._exit(0)
        except OSError as error:
            os.write(write_fd, (error.strerror or str(error)).encode()[:200])
            os._exit(1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    os.close(write_fd)
    reason = os.read(read_fd, 200).decode(errors="replace")
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0, reason or "failed"


def _restrict_with(ruleset: int) -> None:
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    kernel.landlock_restrict_self(ruleset)


def _filter_with(program: kernel.SeccompProgram) -> None:
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    program.apply()


def _pid_nested() -> None:
    kernel.unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def _become_pid_namespace_parent() -> None:  # pragma: no cover - runs in the child
    """Where the forker cannot step back out of a PID namespace (a user namespace): this child makes
    one, forks the run into it as PID 1, and mirrors how the run ended to the forker."""
    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
    kernel.unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        return
    _close_fds_except([])
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 70)


def _open_path(path: str) -> int:
    return os.open(path, os.O_PATH | os.O_CLOEXEC)


def _bind(descriptor: int, target: str, *, read_only: bool) -> None:
    """Bind what `descriptor` (an O_PATH descriptor) names onto `target`, then remount it restricted."""
    source = f"/proc/self/fd/{descriptor}"
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    kernel.mount(source, target, None, MS_BIND | MS_REC)
    # a user namespace may not clear flags the original mount has (nosuid, noexec, atime, ...)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if read_only else 0) | kernel.locked_mount_flags(source)
    kernel.mount(None, target, None, flags)


def _readable_without_hidden(paths: list[str], hidden: list[str]) -> list[tuple[str, int]]:
    """Landlock rules granting `paths` but none of `hidden` beneath them: a directory holding a hidden
    path is granted listing only, and its other entries are granted one by one."""
    hidden_real = [os.path.realpath(h) for h in hidden]
    rules: list[tuple[str, int]] = []

    def grant(path: str) -> None:
        inside = [h for h in hidden_real if h == path or h.startswith(path.rstrip("/") + "/")]
        if not inside:
            rules.append((path, READ_RIGHTS))
            return
        if path in inside or not os.path.isdir(path) or os.path.islink(path):
            return
        rules.append((path, kernel.FS_READ_DIR))
        for entry in sorted(os.listdir(path)):
            grant(os.path.join(path, entry))

    for path in paths:
        grant(os.path.realpath(path))
    return rules


def _close_fds_except(keep: list[int]) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        if fd not in keep:
            os.dup2(null, fd)
    if null not in keep and null > 2:
        os.close(null)
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)


def _apply_rlimits(limits: Limits, baseline: int) -> None:
    memory = limits.memory_limit_mb * 1024 * 1024
    # The address-space limit counts what the zygote had already mapped (numpy, BLAS buffers) too.
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


def _reap_orphans(wait_seconds: float = 0.0) -> None:
    """The zygote is a child subreaper: whatever a run left behind is reparented to it, and reaped
    (if it is still alive after `wait_seconds`, it is not waited for)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)


def empty_folder(path: str, mode: int) -> None:
    """Remove everything in a run's folder without following its symlinks, whatever modes it left."""
    os.chmod(path, mode)
    with os.scandir(path) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        remove_tree(os.path.join(path, name))


def remove_tree(path: str) -> None:
    """Remove a file or folder tree a run made: symlinks are removed, never followed.

    Everything below `path` is reached through directory descriptors and single names, so a chain of
    folders deeper than PATH_MAX (which a run can build one relative mkdir at a time) still goes.
    """
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    os.chmod(path, 0o700)
    # let the owner back into folders the run locked (nothing of the run is alive now), top down
    for _, folders, _, descriptor in os.fwalk(path, follow_symlinks=False):
        for name in folders:
            os.chmod(name, 0o700, dir_fd=descriptor)
    shutil.rmtree(path)  # descriptor-relative on Linux (rmtree's symlink-attack-safe path)
