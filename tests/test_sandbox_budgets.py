"""Findings of a red-team review, each kept closed: the scratch cannot trip the cleanup, and a
submission that stays under every per-call limit still cannot hold a core past one total budget."""

from __future__ import annotations

import time

from grader.engine.assignment import Assignment
from grader.engine.grading import Grader
from grader.sandbox.isolation import Limits
from tests.conftest import EXAMPLES

CORRECT = (EXAMPLES / "correct.py").read_text()


def test_a_folder_chain_deeper_than_path_max_in_the_scratch_costs_nothing(grader: Grader) -> None:
    deep = (
        "import os as _os\n_here = _os.getcwd()\n"
        "for _i in range(40):\n    _n = chr(97 + _i % 26) * 255\n    _os.mkdir(_n)\n    _os.chdir(_n)\n"
        "_os.chdir(_here)\n"
    )
    for _ in range(2):  # the second run of the same zygote starts from a clean scratch
        report = grader.grade((deep + CORRECT).encode())
        assert report.score == 10, report.errors
    assert grader.grade(CORRECT.encode()).score == 10


def test_one_submission_gets_one_total_time_budget(assignment: Assignment, grader: Grader) -> None:
    limits = Limits(time_limit=0.5, import_time_limit=1.0)
    budget = limits.import_time_limit + limits.time_limit * (len(assignment.functions) + 2)
    slow = CORRECT.replace("import numpy as np\n", "import numpy as np\nimport time\ntime.sleep(0.9)\n", 1)
    for name in assignment.functions:  # each function sleeps just under the per-call limit
        wrapper = f"def {name}(*args):\n    time.sleep(0.45)\n    return _{name}(*args)\n\n\ndef _{name}("
        slow = slow.replace(f"def {name}(", wrapper)
    started = time.monotonic()
    report = Grader(assignment, pool=grader.pool, limits=limits).grade(slow.encode())
    elapsed = time.monotonic() - started
    assert elapsed < budget + 3, elapsed
    messages = [c.message for p in report.problems for c in p.checks if not c.passed]
    assert messages and any("used up the" in m for m in messages)
    assert "time" in report.limits_hit
