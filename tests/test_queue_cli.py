"""`grader worker` as a user meets it: a clear sentence when the queue is not configured, a healthcheck
that tells a live worker from a dead one, and URLs logged without their passwords."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import main
from grader.queue.broker import QueueConfig, safe_redis_url
from grader.queue.worker import _BrokerOutageNoise
from grader.settings import Settings, get_settings
from tests.queue_support import grader_env, start_grader, wait_for


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


def test_dramatiqs_outage_chatter_is_left_out_of_the_log() -> None:
    """Each consumer thread reports a Redis outage at CRITICAL every few seconds; the worker says it once."""
    noise = _BrokerOutageNoise()

    def record(name: str, level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    thread = "dramatiq.worker.ConsumerThread(grader.single)"
    assert not noise.filter(record(thread, logging.CRITICAL, "Consumer encountered a connection error: refused"))
    assert not noise.filter(record(thread, logging.INFO, "Restarting consumer in 3.00 seconds."))
    assert noise.filter(record(thread, logging.CRITICAL, "Consumer encountered an unexpected error."))
    assert noise.filter(record("grader.queue.worker", logging.WARNING, "Redis at redis://q is unavailable"))


def test_a_worker_stopped_while_it_waits_for_the_database_stops_quietly(tmp_path: Path) -> None:
    env = grader_env(GRADER_QUEUE_URL="redis://127.0.0.1:1/0", GRADER_DATABASE_URL="postgresql://postgres@127.0.0.1:1/x",
                     GRADER_DATA_DIR=str(tmp_path))
    log = tmp_path / "worker.log"
    process = start_grader(["worker", "--heartbeat-file", str(tmp_path / "beat")], env, log)
    try:
        wait_for(lambda: "retrying in" in log.read_text(), 60, "the worker to wait for the database")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "Traceback" not in text and "stopped while waiting for the database" in text
    assert "alembic" not in text  # no import-time chatter from the migrations library either
    assert not (tmp_path / "beat").exists()  # it never beat: it never could take work
