"""The sandbox finds the Python install wherever it lives, even under /tmp, where its new root is mounted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import EXAMPLES, ROOT


def test_a_virtualenv_under_tmp_stays_importable_in_the_sandbox() -> None:
    with tempfile.TemporaryDirectory(prefix="grader-venv-", dir="/tmp") as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                       check=True, timeout=120)
        python = venv / "bin" / "python"
        site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                              check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        assert site.startswith("/tmp/")
        # a module that exists only inside the virtualenv, under /tmp
        (Path(site) / "venv_only_helper.py").write_text("def double(x):\n    return 2 * x\n")
        submission = Path(folder) / "layers.py"
        source = (EXAMPLES / "correct.py").read_text()
        submission.write_text("from venv_only_helper import double\n" + source.replace(
            "    grad_w = reg * w", "    grad_w = double(reg * w) / 2"))
        completed = subprocess.run(
            [str(python), "-m", "grader.cli", "grade", str(submission), "--format", "json"],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert completed.returncode == 0, completed.stderr
        report = json.loads(completed.stdout)
        assert report["errors"] == [] and report["score"] == 10
