"""Memory and process-count cgroups for a zygote's runs (cgroup v1 here, v2 where the host has it).

One cgroup per controller per zygote, named `hw-grader.<pool pid>.<zygote index>`, created inside
the cgroup the grader itself runs in (so limits a deployment sets above it still apply). Runs join
it one at a time; after each run it is emptied, so nothing a run leaves is reachable by the next.
The zygote removes its cgroups when it exits; the pool removes them when a zygote dies, and sweeps
those of grader processes that no longer exist.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

PREFIX = "hw-grader."
CONTROLLERS = ("memory", "pids")


@dataclass
class Hierarchy:
    """Where a controller's cgroup tree is mounted, and the grader's own cgroup inside it."""

    version: int
    parent: str  # the directory of the cgroup this process is in


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as cgroup:
        for line in cgroup:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _mounts() -> list[tuple[str, str, str, list[str]]]:
    """(mount root, mount point, fs type, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            left, right = line.split(" - ", 1)
            fields = left.split()
            fstype, _source, options = right.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((fields[3], fields[4].replace("\\040", " "), fstype, options.split(",")))
    return found


def find_hierarchy(controller: str) -> Hierarchy | None:
    """The v1 hierarchy of `controller`, else the v2 one if it offers `controller`, else None."""
    own = _own_cgroups()
    mounts = _mounts()
    for root, point, fstype, options in mounts:
        if fstype == "cgroup" and controller in options and controller in own:
            return Hierarchy(1, _join(point, root, own[controller]))
    for root, point, fstype, _options in mounts:
        if fstype == "cgroup2" and "" in own:
            parent = _join(point, root, own[""])
            try:
                with open(os.path.join(parent, "cgroup.controllers")) as available:
                    if controller in available.read().split():
                        return Hierarchy(2, parent)
            except OSError:
                continue
    return None


def _join(point: str, root: str, path: str) -> str:
    relative = path[len(root):] if root != "/" and path.startswith(root) else path
    return os.path.join(point, relative.lstrip("/"))


@dataclass
class ZygoteCgroups:
    """The memory and pids cgroups one zygote puts its runs in."""

    name: str
    memory: str | None = None
    pids: str | None = None
    versions: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    join_fds: list[int] = field(default_factory=list)
    _limits: tuple[int, int] | None = None

    @classmethod
    def create(cls, name: str) -> ZygoteCgroups:
        """Make what the host allows; `notes` says why a controller is missing."""
        groups = cls(name)
        for controller in CONTROLLERS:
            try:
                hierarchy = find_hierarchy(controller)
                if hierarchy is None:
                    groups.notes[controller] = f"no cgroup hierarchy offers the {controller} controller"
                    continue
                path = os.path.join(hierarchy.parent, name)
                if hierarchy.version == 2:
                    _enable_v2(hierarchy.parent, controller)
                os.makedirs(path, exist_ok=True)
                setattr(groups, controller, path)
                groups.versions[controller] = hierarchy.version
                groups.join_fds.append(os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
            except OSError as error:
                groups.notes[controller] = f"cannot create a {controller} cgroup ({error.strerror or error})"
        return groups

    def paths(self) -> list[str]:
        return [p for p in (self.memory, self.pids) if p]

    def set_limits(self, memory_bytes: int, processes: int) -> None:
        """Write the limits when they differ from the last run's."""
        if self._limits == (memory_bytes, processes):
            return
        if self.memory:
            if self.versions["memory"] == 1:
                _write_memory_v1(self.memory, memory_bytes)
            else:
                _write(self.memory, "memory.max", str(memory_bytes))
                _write(self.memory, "memory.swap.max", "0", missing_ok=True)
        if self.pids:
            _write(self.pids, "pids.max", str(processes))
        self._limits = (memory_bytes, processes)

    def join(self) -> None:
        """Called in a run before anything else: put this process in the cgroups."""
        for fd in self.join_fds:
            os.write(fd, b"0")

    def oom_kills(self) -> int:
        """How many processes the kernel has killed for the memory limit so far."""
        if not self.memory:
            return 0
        name = "memory.oom_control" if self.versions["memory"] == 1 else "memory.events"
        try:
            with open(os.path.join(self.memory, name)) as events:
                for line in events:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
            with open(os.path.join(self.memory, "memory.failcnt")) as failcnt:
                return int(failcnt.read())
        except (OSError, ValueError):
            return 0

    def kill_all(self) -> int:
        """Kill whatever is still in the cgroups; returns how many processes were found."""
        return sum(kill_members(path) for path in self.paths())

    def close(self) -> None:
        for fd in self.join_fds:
            os.close(fd)
        self.join_fds = []
        for path in self.paths():
            remove(path)


def _enable_v2(parent: str, controller: str) -> None:
    with open(os.path.join(parent, "cgroup.subtree_control")) as enabled:
        if controller in enabled.read().split():
            return
    _write(parent, "cgroup.subtree_control", f"+{controller}")


def _write(directory: str, name: str, value: str, *, missing_ok: bool = False) -> None:
    try:
        with open(os.path.join(directory, name), "w") as control:
            control.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _write_memory_v1(path: str, memory_bytes: int) -> None:
    # memory+swap must stay >= memory: which one moves first depends on the direction
    swap = os.path.join(path, "memory.memsw.limit_in_bytes")
    if not os.path.exists(swap):
        _write(path, "memory.limit_in_bytes", str(memory_bytes))
        return
    try:
        _write(path, "memory.limit_in_bytes", str(memory_bytes))
        _write(path, "memory.memsw.limit_in_bytes", str(memory_bytes))
    except OSError:
        _write(path, "memory.memsw.limit_in_bytes", str(memory_bytes))
        _write(path, "memory.limit_in_bytes", str(memory_bytes))


def members(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as procs:
            return [int(line) for line in procs if line.strip()]
    except (OSError, ValueError):
        return []


def kill_members(path: str) -> int:
    """SIGKILL every process in a cgroup until it stays empty (a fork may race the first pass)."""
    found = 0
    for _ in range(50):
        pids = members(path)
        if not pids:
            return found
        found += len(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)
    return found


def remove(path: str) -> None:
    """Empty and remove one cgroup; a cgroup still busy after that is left to the next sweep."""
    kill_members(path)
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.005)


def remove_named(name: str) -> None:
    """Remove a zygote's cgroups, by name, from each hierarchy that has them (for when the zygote
    could not remove them itself)."""
    for controller in CONTROLLERS:
        hierarchy = find_hierarchy(controller)
        if hierarchy is not None:
            path = os.path.join(hierarchy.parent, name)
            if os.path.isdir(path):
                remove(path)


def stale(entry: str) -> bool:
    """Whether a cgroup's or scratch folder's name is that of a grader process that no longer exists."""
    if not entry.startswith(PREFIX):
        return False
    owner = entry[len(PREFIX):].split(".")[0]
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
    return owner.isascii() and owner.isdigit() and not alive(int(owner))


def sweep_stale() -> list[str]:
    """Remove the cgroups of grader processes that no longer exist; returns what was removed."""
    removed = []
    for controller in CONTROLLERS:
        try:
            hierarchy = find_hierarchy(controller)
        except OSError:
            continue
        if hierarchy is None:
            continue
        try:
            entries = os.listdir(hierarchy.parent)
        except OSError:
            continue
        for entry in entries:
            if stale(entry):
                path = os.path.join(hierarchy.parent, entry)
                remove(path)
                removed.append(path)
    return removed


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
