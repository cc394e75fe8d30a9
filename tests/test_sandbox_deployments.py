"""The sandbox degrades to what a deployment allows, and what docs/sandbox.md promises still holds.

Each deployment is simulated by tests/sandbox_deployment.py (a container as Docker runs one by
default, the hardened docker-compose worker, an unprivileged user with user namespaces): `grader
doctor` must report the layers the docs list for it, and the hostile samples must score exactly as
on a root host with nothing leaked, reached, written or left behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.sandbox_support import (
    HOSTILE,
    assert_contained,
    assignment_copy,
    check_scores,
    deployment_command,
    grade_command,
    reports_by_file,
    run_grader,
    skip_if_python_under_tmp,
    watching,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="simulating deployments needs root")

# What docs/sandbox.md says holds in each deployment.
LAYERS = {
    "docker-default": {
        "user_namespace": False, "pid_namespace": False, "network_namespace": False, "mount_namespace": False,
        "new_root": False, "cgroup_memory": False, "cgroup_pids": False, "unprivileged_uid": True,
        "no_new_privs": True, "landlock": True, "seccomp": True, "no_network": True,
    },
    "compose": {
        "user_namespace": False, "pid_namespace": False, "network_namespace": False, "mount_namespace": False,
        "new_root": False, "cgroup_memory": False, "cgroup_pids": False, "unprivileged_uid": False,
        "no_new_privs": True, "landlock": True, "seccomp": True, "no_network": True,
    },
    "rootless": {
        "user_namespace": True, "pid_namespace": True, "network_namespace": True, "mount_namespace": True,
        "new_root": True, "cgroup_memory": False, "cgroup_pids": False, "unprivileged_uid": False,
        "no_new_privs": True, "landlock": True, "seccomp": True, "no_network": True,
    },
}


@pytest.fixture(scope="module")
def short_assignment() -> Iterator[Path]:
    with assignment_copy(time_limit=1.5, import_time_limit=3.0) as path:
        yield path


def doctor(profile: str) -> dict[str, object]:
    result = run_grader(deployment_command(profile, "doctor", "--format", "json"), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("profile", sorted(LAYERS))
def test_doctor_reports_what_the_deployment_allows(profile: str) -> None:
    skip_if_python_under_tmp(profile)
    report = doctor(profile)
    layers = report["layers"]
    assert isinstance(layers, dict)
    assert {k: layers[k] for k in LAYERS[profile]} == LAYERS[profile]
    assert report["minimum_holds"] is True


@pytest.mark.parametrize("profile", sorted(LAYERS))
def test_hostile_samples_in_each_deployment(profile: str, short_assignment: Path) -> None:
    skip_if_python_under_tmp(profile)
    with watching() as (listeners, before):
        result = run_grader(grade_command(short_assignment, sorted(HOSTILE.glob("*.py")), profile))
        assert result.returncode == 0, result.stderr[-2000:]
        check_scores(reports_by_file(result.stdout), messages=False)
        assert "stopped answering" not in result.stderr, "a zygote died"
        assert_contained(result, listeners, before)


def test_without_the_minimum_grading_refuses_unless_told_to_run_insecurely() -> None:
    """Where neither a network namespace nor seccomp can be had, `grade` refuses in one sentence;
    `--insecure-no-sandbox` grades anyway, loudly."""
    correct = str(EXAMPLES / "correct.py")
    doctor_run = run_grader(deployment_command("no-isolation", "doctor"), timeout=60)
    assert doctor_run.returncode == 1
    assert "no_network         no" in doctor_run.stdout and "refuses to run" in doctor_run.stdout
    refused = run_grader(deployment_command("no-isolation", "grade", correct))
    assert refused.returncode != 0 and refused.stdout == ""
    assert "cannot give student code even the minimum isolation" in refused.stderr
    assert "--insecure-no-sandbox" in refused.stderr and "Traceback" not in refused.stderr
    insecure = run_grader(deployment_command("no-isolation", "grade", "--insecure-no-sandbox", "--format", "json",
                                             correct))
    assert insecure.returncode == 0, insecure.stderr[-2000:]
    assert json.loads(insecure.stdout)["score"] == 10
    assert "GRADING WITHOUT A SANDBOX" in insecure.stderr
