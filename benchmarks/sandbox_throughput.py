"""How much grading a class costs, against the floor of any grader that starts a process per submission.

Run: `python benchmarks/sandbox_throughput.py [--copies 120] [--rounds 11] [--latency-runs 300]`. Prints the machine,
the sandbox layers in force, the time to grade N copies of submissions/examples/correct.py fully
sandboxed on every core, the time to start N fresh `python -c "import numpy"` processes as many at a
time as there are cores (with the interpreter binary; then once more without the script's own
OPENBLAS_NUM_THREADS=1, and through the pyenv shim when there is one), their ratio (the target is at
most 0.10, against the first, the strictest floor; rounds alternate, so that the machine's load
weighs on both, and there are 11 of them by default: a round of grading is under a second, and on a
shared VM single rounds vary by 10% either way), single-submission latency percentiles and the
grader's memory (the zygotes' forkers included).
The numbers go into docs/benchmarks.md by hand; this is a script, never a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STARTED_WITH = dict(os.environ)  # for the floor as a shell would run it, BLAS threads and all
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import children, percentile, process_cpu  # noqa: E402

from grader.engine.assignment import load_assignment  # noqa: E402
from grader.engine.grading import Grader  # noqa: E402


def fresh_interpreters(command: list[str], copies: int, parallel: int, env: dict[str, str] | None = None) -> float:
    """Seconds to run `copies` processes of `command`, `parallel` at a time."""
    started = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    launched = 0
    while launched < copies or running:
        while launched < copies and len(running) < parallel:
            running.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env))
            launched += 1
        running[0].wait()
        if running[0].returncode != 0:
            raise SystemExit(f"{command} failed with status {running[0].returncode}")
        running.pop(0)
    return time.perf_counter() - started


def pyenv_shim() -> str | None:
    """The pyenv `python3` shim a shell would run, if there is one (pyenv itself puts the version's
    own bin folder first on PATH for the processes it starts, so `which` would find the binary)."""
    candidates = [Path(p) / "python3" for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p).name == "shims"]
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates.append(Path(root) / "shims" / "python3")
    return next((str(c) for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def forkers(zygotes: list[int]) -> list[int]:
    """Each zygote's forker, the process its runs are forked from (its one child between runs)."""
    return [pid for z in zygotes for pid in children(z)]


def cpu_seconds(zygotes: list[int], forking: list[int]) -> tuple[float, float, float]:
    """CPU seconds so far of this process, of the zygotes and their forkers, and of the runs the
    forkers forked and reaped."""
    own = os.times()
    zygote = runs = 0.0
    for pid in zygotes:
        zygote += process_cpu(pid)[0]
    for pid in forking:
        itself, reaped = process_cpu(pid)
        zygote += itself
        runs += reaped
    return own.user + own.system, zygote, runs


def rss_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in kB: PSS splits pages shared between zygotes and the parent fairly."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=120)
    parser.add_argument("--latency-runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=11, help="alternating rounds of grading and of the floor")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    source = (ROOT / "submissions" / "examples" / "correct.py").read_bytes()
    print(f"machine: {machine()}")

    assignment = load_assignment()
    binary = os.path.realpath(sys.executable)
    with Grader(assignment, workers=cores) as grader:
        print("layers: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in grader.layers.items()))
        warm = grader.grade_many([(f"warm{i}", source) for i in range(2 * cores)])
        assert all(r.score == 10 for r in warm), [r.errors for r in warm]
        # Grading and the floor alternate, so that a change in the machine's load affects both alike.
        rounds = []
        zygotes = grader.pool.zygote_pids()
        forking = forkers(zygotes)
        cpu: list[tuple[float, float, float]] = []
        for _ in range(args.rounds):
            before = cpu_seconds(zygotes, forking)
            started = time.perf_counter()
            reports = grader.grade_many([(f"s{i}", source) for i in range(args.copies)])
            graded = time.perf_counter() - started
            after = cpu_seconds(zygotes, forking)
            cpu.append(tuple((b - a) / args.copies * 1000 for a, b in zip(before, after, strict=True)))
            assert all(r.score == 10 for r in reports), "a correct copy did not score 10"
            floor = fresh_interpreters([binary, "-c", "import numpy"], args.copies, cores)
            rounds.append((graded, floor))
        latencies = []
        for _ in range(args.latency_runs):
            started = time.perf_counter()
            report = grader.grade(source)
            latencies.append(time.perf_counter() - started)
            assert report.score == 10
        zygotes = grader.pool.zygote_pids()
        pids = [os.getpid(), *zygotes, *forkers(zygotes)]
        memory = [rss_kb(pid) for pid in pids]
    shim = pyenv_shim()
    shim_seconds = fresh_interpreters([shim, "-c", "import numpy"], args.copies, cores) if shim else None
    # The floor above inherits this script's OPENBLAS_NUM_THREADS=1 (numpy then starts no BLAS
    # threads), which makes it the stricter one; a shell that has not set it pays for the threads.
    plain_seconds = None
    if "OPENBLAS_NUM_THREADS" not in STARTED_WITH:
        plain_seconds = fresh_interpreters([binary, "-c", "import numpy"], args.copies, cores, env=STARTED_WITH)

    print(f"{args.copies} copies of correct.py graded fully sandboxed on {cores} cores, against {args.copies} x "
          f"`{binary} -c 'import numpy'` run {cores} at a time:")
    for graded, floor in rounds:
        print(f"  grading {graded:.3f} s ({graded / args.copies * 1000:.2f} ms per submission), "
              f"fresh interpreters {floor:.3f} s, ratio {graded / floor:.3f}")
    ratios = sorted(graded / floor for graded, floor in rounds)
    print(f"ratio (median of {len(rounds)} rounds): {statistics.median(ratios):.3f}  (target <= 0.10)")
    # one measurement each, against the median grading time
    typical = statistics.median(graded for graded, _ in rounds)
    if plain_seconds is not None:
        print(f"the binary without OPENBLAS_NUM_THREADS=1 (numpy starts its BLAS threads): {plain_seconds:.3f} s; "
              f"ratio {typical / plain_seconds:.3f}")
    if shim_seconds is not None:
        print(f"through the pyenv shim `{shim}`: {shim_seconds:.3f} s; ratio {typical / shim_seconds:.3f}")
    parent, zygote, runs = (statistics.median(c[i] for c in cpu) for i in range(3))
    print(f"CPU per submission (median of rounds): grader process {parent:.2f} ms, "
          f"zygotes and forkers {zygote:.2f} ms, sandboxed runs {runs:.2f} ms, total {parent + zygote + runs:.2f} ms")
    print(f"single-submission latency over {args.latency_runs} runs: p50 {percentile(latencies, 50) * 1000:.2f} ms, "
          f"p99 {percentile(latencies, 99) * 1000:.2f} ms, mean {statistics.mean(latencies) * 1000:.2f} ms")
    count = (len(pids) - 1) // 2
    names = ["parent", *[f"zygote {i}" for i in range(count)], *[f"forker {i}" for i in range(count)]]
    for name, (rss, pss) in zip(names, memory, strict=True):
        print(f"memory {name:9}: RSS {rss / 1024:6.1f} MB, PSS {pss / 1024:6.1f} MB")
    print(f"memory total    : RSS {sum(m[0] for m in memory) / 1024:6.1f} MB, "
          f"PSS {sum(m[1] for m in memory) / 1024:6.1f} MB")


if __name__ == "__main__":
    main()
