"""`grader worker` as a user meets it: a clear sentence when the queue is not configured, a healthcheck
that tells a live worker from a dead one, and URLs logged without their passwords."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import main
from grader.queue.broker import QueueConfig, safe_redis_url
from grader.settings import Settings, get_settings


@pytest.fixture
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("GRADER_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_worker_without_a_queue_url_says_what_to_set(clean_settings: None) -> None:
    result = CliRunner().invoke(main, ["worker"])
    assert result.exit_code == 2
    assert "GRADER_QUEUE_URL" in result.output
    assert "Traceback" not in result.output


def test_worker_check_tells_fresh_from_stale_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    runner = CliRunner()
    missing = runner.invoke(main, ["worker", "--check", "--heartbeat-file", str(beat)])
    assert missing.exit_code != 0 and "no worker has touched" in missing.output
    beat.touch()
    assert runner.invoke(main, ["worker", "--check", "--heartbeat-file", str(beat)]).exit_code == 0
    old = time.time() - 600
    os.utime(beat, (old, old))
    assert runner.invoke(main, ["worker", "--check", "--heartbeat-file", str(beat)]).exit_code != 0


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@queue:6379/0", "redis://***@queue:6379/0"),
    ("redis://grader:s3cret@queue:6379/0", "redis://grader:***@queue:6379/0"),
    ("rediss://queue.example:6380/2", "rediss://queue.example:6380/2"),
])
def test_redis_urls_are_logged_without_passwords(url: str, shown: str) -> None:
    assert safe_redis_url(url) == shown
    assert "s3cret" not in QueueConfig(url=url).safe_url


def test_queue_config_comes_from_the_settings() -> None:
    settings = Settings(queue_url="redis://q:6379/1", queue_namespace="course-a", queue_heartbeat_timeout=7)
    config = QueueConfig.from_settings(settings)
    assert (config.url, config.namespace, config.heartbeat_timeout) == ("redis://q:6379/1", "course-a", 7)
    with pytest.raises(ValueError, match="GRADER_QUEUE_URL"):
        QueueConfig.from_settings(Settings(queue_url=None))
