"""Run a command the way a deployment would confine it, to test how the sandbox degrades.

    python tests/sandbox_deployment.py [--keep PATH]... PROFILE -- ARGS...   (runs `python ARGS...`; as root)

Profiles (see docs/sandbox.md):
  docker-default  a container as Docker runs one by default: root with Docker's default capability
                  set, Docker's default seccomp profile (no namespaces, mounts or keyrings), the
                  cgroup tree mounted read-only;
  compose         the hardened docker-compose worker: `cap_drop: [ALL]`, `no-new-privileges`,
                  `read_only: true` with a tmpfs on /tmp, and the same seccomp profile;
  rootless        an unprivileged user (uid 1000) on a host that allows user namespaces;
  no-isolation    a container that refuses namespaces, seccomp filters and Landlock alike, where
                  not even the minimum isolation can be had.
In every profile the Python install is made world-readable (as it is in a container image; here it
lives under /root, mode 0700), and the paths given with `--keep PATH` stay visible in /tmp.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grader.sandbox import kernel

# Docker's default capability set (moby's oci/caps/defaults.go)
DOCKER_CAPABILITIES = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31}  # CHOWN .. SETFCAP
# What Docker's default seccomp profile denies a container without CAP_SYS_ADMIN, as far as the
# sandbox's layers are concerned.
DOCKER_DENIED = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "userfaultfd", "kexec_load", "reboot", "init_module", "finit_module", "delete_module", "swapon", "swapoff",
    "syslog", "acct", "settimeofday", "clock_settime", "quotactl",
)
UNPRIVILEGED_UID = 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", choices=["docker-default", "compose", "rootless", "no-isolation"])
    parser.add_argument("--keep", action="append", default=[], help="a path under /tmp to keep visible")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args

    kernel.unshare(kernel.CLONE_NEWNS)
    kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
    readable_python()
    read_only_cgroups()
    if options.profile == "compose":
        read_only_root(options.keep)
    if options.profile in ("docker-default", "compose", "no-isolation"):
        docker_seccomp(refuse_filters=options.profile == "no-isolation")
    if options.profile == "docker-default":
        keep_capabilities(DOCKER_CAPABILITIES)
    else:
        keep_capabilities(set())
    if options.profile == "compose":
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    if options.profile == "rootless":
        os.setgroups([])
        os.setresgid(UNPRIVILEGED_UID, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        os.setresuid(UNPRIVILEGED_UID, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        os.environ["HOME"] = "/tmp"
    os.execv(sys.executable, [sys.executable, *args])


def readable_python() -> None:
    """Put a world-readable /root over the real one, holding only the Python install."""
    prefix = Path(sys.base_prefix).resolve()
    if not str(prefix).startswith("/root/"):
        return
    top = Path("/root") / prefix.relative_to("/root").parts[0]  # e.g. /root/.pyenv
    holder = Path("/run/sandbox-deployment-python")
    holder.mkdir(parents=True, exist_ok=True)
    kernel.mount(str(top), str(holder), None, kernel.MS_BIND | kernel.MS_REC)
    kernel.mount("tmpfs", "/root", "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "mode=0755,size=1m")
    top.mkdir()
    kernel.mount(str(holder), str(top), None, kernel.MS_BIND | kernel.MS_REC)


def read_only_cgroups() -> None:
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo if line.split()[4].startswith("/sys/fs/cgroup")]
    for point in points:
        try:
            kernel.mount(None, point, None, kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY
                         | kernel.locked_mount_flags(point))
        except OSError:
            pass


def read_only_root(keep: list[str]) -> None:
    """`read_only: true` with `tmpfs: /tmp`: the kept paths are bound into the fresh /tmp."""
    holders = []
    for i, path in enumerate(keep):
        holder = Path(f"/run/sandbox-deployment-keep-{i}")
        holder.mkdir(parents=True, exist_ok=True)
        kernel.mount(path, str(holder), None, kernel.MS_BIND | kernel.MS_REC)
        holders.append((holder, path))
    kernel.mount("tmpfs", "/tmp", "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "mode=1777,size=256m")
    for holder, path in holders:
        Path(path).mkdir(parents=True, exist_ok=True)
        kernel.mount(str(holder), path, None, kernel.MS_BIND | kernel.MS_REC)
    flags = kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY | kernel.locked_mount_flags("/")
    kernel.mount(None, "/", None, flags)


def docker_seccomp(*, refuse_filters: bool = False) -> None:
    import errno

    import pyseccomp

    docker = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    filters = ("seccomp", "landlock_create_ruleset", "landlock_restrict_self")
    denied = DOCKER_DENIED + (filters if refuse_filters else ())
    if refuse_filters:
        docker.add_rule(pyseccomp.ERRNO(errno.EPERM), "prctl", pyseccomp.Arg(0, pyseccomp.EQ, kernel.PR_SET_SECCOMP))
    for name in denied:
        if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) >= 0:
            docker.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    for flag in kernel.NAMESPACE_FLAGS:
        docker.add_rule(pyseccomp.ERRNO(errno.EPERM), "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    docker.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    docker.load()


def keep_capabilities(keep: set[int]) -> None:
    """Shrink the bounding set to `keep`: what root gets back on exec, as in a container."""
    with open("/proc/sys/kernel/cap_last_cap") as last:
        for capability in range(int(last.read()) + 1):
            if capability not in keep:
                kernel.prctl(kernel.PR_CAPBSET_DROP, capability)


if __name__ == "__main__":
    main()
