"""Thin ctypes wrappers over the kernel interfaces the sandbox policy uses.

Nothing here decides anything: `isolation.py` says which of these are applied, when and why. Each
wrapper raises OSError with the kernel's errno, so a layer the host refuses is detected, not assumed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterable

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# namespaces (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
NAMESPACE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET)

# mount(2)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
SECCOMP_MODE_FILTER = 2

# capabilities (linux/capability.h)
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SYS_ADMIN = 21
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Landlock (linux/landlock.h); syscalls 444-446 on every architecture that has them
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6
# rights that make sense on a file (the rest apply only to directories)
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


# fork(2) called with the GIL held, for `fork_bare`
_fork = ctypes.PyDLL(None, use_errno=True).fork
_fork.restype = ctypes.c_int


def fork_bare() -> int:
    """fork(2) without CPython's before- and after-fork work (`os.fork` reinitialises the GIL, the
    import lock and the thread states and runs the `os.register_at_fork` hooks: in a bare
    interpreter's child 0.5 ms and 180 page faults here, in a run about 0.3 ms and 50). Only for a
    process with one thread, which holds the GIL and is not importing: the child is then a faithful
    copy that needs none of it, except that the at-fork hooks (random's reseeding, threading's
    bookkeeping) do not run."""
    return _check(_fork(), "fork")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
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


def locked_mount_flags(path: str) -> int:
    """The flags a bind remount of `path` must keep: a user namespace may not clear them."""
    flags = os.statvfs(path).f_flag
    result = 0
    for st_flag, ms_flag in (
        (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
        (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME),
    ):
        if flags & st_flag:
            result |= ms_flag
    return result


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), "prctl")


# -- capabilities ----------------------------------------------------------------------------------


def effective_capabilities() -> int:
    """This process's effective capability mask, as /proc reports it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has_capability(mask: int, capability: int) -> bool:
    return bool(mask >> capability & 1)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_all_capabilities() -> None:
    """Empty the bounding set (where allowed) and the effective, permitted and inheritable sets."""
    last = 40
    try:
        with open("/proc/sys/kernel/cap_last_cap") as cap_last:
            last = int(cap_last.read())
    except OSError:
        pass
    for capability in range(last + 1):
        if _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break  # without CAP_SETPCAP the bounding set stays; the empty sets below still hold
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


# -- user namespaces -------------------------------------------------------------------------------


def map_root_to(uid: int, gid: int) -> None:
    """After unshare(CLONE_NEWUSER): be root inside, `uid`/`gid` outside (the only mapping allowed
    without privileges)."""
    with open("/proc/self/setgroups", "w") as setgroups:
        setgroups.write("deny")
    with open("/proc/self/uid_map", "w") as uid_map:
        uid_map.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as gid_map:
        gid_map.write(f"0 {gid} 1")


# -- Landlock --------------------------------------------------------------------------------------


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers, 0 when it has none (or a seccomp filter hides it)."""
    result = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                           ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(0, int(result))


def landlock_handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def landlock_create_ruleset(abi: int, fs: int, net: int, scoped: int) -> int:
    attr = _RulesetAttr(fs, net if abi >= 4 else 0, scoped if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    fd = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    return _check(int(fd), "landlock_create_ruleset")


def landlock_allow_beneath(ruleset: int, path: str, rights: int) -> None:
    """Allow `rights` on `path` and everything beneath it (file-only rights when it is a file)."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not os.path.isdir(path):
            rights &= FS_FILE_RIGHTS
        attr = _PathBeneathAttr(rights, fd)
        result = _libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                               ctypes.byref(attr), ctypes.c_uint32(0))
        _check(int(result), f"landlock_add_rule {path}")
    finally:
        os.close(fd)


def landlock_restrict_self(ruleset: int) -> None:
    result = _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    _check(int(result), "landlock_restrict_self")


# -- seccomp ---------------------------------------------------------------------------------------


# libseccomp's comparison operators (enum scmp_compare); for MASKED_EQ the first datum is the mask
CMP_NE = 1
CMP_EQ = 4
CMP_MASKED_EQ = 7


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompProgram:
    """A compiled BPF filter, kept ready so that applying it per run is a single prctl."""

    def __init__(self, bpf: bytes) -> None:
        if not bpf or len(bpf) % 8:
            raise ValueError("a BPF program is a non-empty list of 8-byte instructions")
        self.bpf = bpf
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._program = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buffer))

    @property
    def instructions(self) -> int:
        return len(self.bpf) // 8

    def apply(self) -> None:
        """Install the filter on this (single-threaded) process; needs no_new_privs."""
        result = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._program), 0, 0)
        _check(result, "seccomp")


SECCOMP_RET_ERRNO = 0x00050000
_BPF_LD_W_ABS = 0x20
_BPF_JMP_JGT_K = 0x25
_BPF_RET_K = 0x06


def _unknown_above(newest: int) -> bytes:
    """Three hand-written instructions put before libseccomp's program: a call numbered above
    `newest` fails with ENOSYS (as one rule per number would, at a fraction of the size). Numbers of
    foreign architectures and the x32 ABI above it are refused too; below it libseccomp's own
    architecture check still applies."""
    instruction = struct.Struct("=HBBI")  # struct sock_filter
    return b"".join((
        instruction.pack(_BPF_LD_W_ABS, 0, 0, 0),  # A = seccomp_data.nr
        instruction.pack(_BPF_JMP_JGT_K, 0, 1, newest),  # A > newest ? next : skip one
        instruction.pack(_BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
    ))


def load_seccomp_library() -> None:
    """Import pyseccomp now, if it is installed, so that compiling a filter later needs no file access."""
    try:
        import pyseccomp  # noqa: F401
    except ImportError:
        pass  # reported by the seccomp layer's probe


# Calls newer than some libseccomp releases know by name. From pidfd_send_signal (424) on, every
# architecture gives a new call the same number, so these hold wherever the policy's numbers do.
NEWER_SYSCALLS = {"statmount": 457, "listmount": 458}


def compile_seccomp(
    rules: Iterable[tuple[str | int, int, tuple[tuple[int, int, int, int], ...]]], newest_syscall: int | None = None
) -> SeccompProgram:
    """Compile (syscall, errno, argument comparisons) denials on top of "allow" with libseccomp.

    A comparison is (argument index, operator, value, mask-or-0) with pyseccomp's operator codes.
    Syscalls this libseccomp does not know by name are skipped (those in NEWER_SYSCALLS are taken by
    number); numbers are taken as given. With
    `newest_syscall`, every call numbered above it fails with ENOSYS.
    """
    import tempfile

    import pyseccomp

    seccomp_filter = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    try:
        # a binary tree of syscall numbers rather than a chain: the same decisions, and the kernel
        # prepares the filter (its per-syscall cache) in 65 us instead of 160 at every run
        seccomp_filter.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    except (AttributeError, OSError, ValueError, RuntimeError):
        pass  # libseccomp before 2.5 (or its binding) builds the chain
    for syscall, error, comparisons in rules:
        if isinstance(syscall, str) and pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, syscall) < 0:
            if syscall not in NEWER_SYSCALLS:
                continue
            syscall = NEWER_SYSCALLS[syscall]
        args = [pyseccomp.Arg(index, op, a, b) for index, op, a, b in comparisons]
        seccomp_filter.add_rule(pyseccomp.ERRNO(error), syscall, *args)
    with tempfile.TemporaryFile() as exported:
        seccomp_filter.export_bpf(exported)
        exported.seek(0)
        program = exported.read()
    if newest_syscall is not None:
        program = _unknown_above(newest_syscall) + program
    return SeccompProgram(program)
