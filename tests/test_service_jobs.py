"""The in-process job queue: duplicates collapse, single files go first, failed runs are retried."""

from __future__ import annotations

import threading

from grader.service.jobs import GradeWork, InProcessQueue, Outcome


class Recorder:
    """A run function that blocks until released, remembering the order items ran in."""

    def __init__(self, failures: dict[int, int] | None = None) -> None:
        self.ran: list[GradeWork] = []
        self.release = threading.Event()
        self.failures = dict(failures or {})
        self.done = threading.Semaphore(0)
        self.started = threading.Event()

    def __call__(self, work: GradeWork) -> Outcome:
        self.started.set()
        self.release.wait(10)
        self.ran.append(work)
        self.done.release()
        if self.failures.get(work.submission_id, 0) > 0:
            self.failures[work.submission_id] -= 1
            return Outcome(work, error="boom", retry=True)
        return Outcome(work, recorded=True)

    def wait_for(self, count: int) -> None:
        for _ in range(count):
            assert self.done.acquire(timeout=10)


def test_waiting_duplicates_collapse_and_single_files_go_first() -> None:
    recorder = Recorder()
    queue = InProcessQueue(recorder, workers=1)
    try:
        blocker = GradeWork(99, 7)
        queue.submit(blocker)  # occupies the only worker until released
        assert recorder.started.wait(10)
        for work in (GradeWork(1, 7), GradeWork(2, 7), GradeWork(1, 7), GradeWork(3, None)):
            queue.submit(work)
        assert queue.depth() == 3  # submission 1 waits once
        recorder.release.set()
        recorder.wait_for(4)
        assert recorder.ran[0] == blocker
        assert recorder.ran[1:] == [GradeWork(3, None), GradeWork(1, 7), GradeWork(2, 7)]
        assert queue.depth() == 0
    finally:
        queue.close()


def test_a_failed_run_is_retried_until_it_succeeds() -> None:
    recorder = Recorder(failures={5: 2})
    recorder.release.set()
    queue = InProcessQueue(recorder, workers=2)
    try:
        queue.submit(GradeWork(5, 1))
        recorder.wait_for(3)
        assert recorder.ran == [GradeWork(5, 1)] * 3
    finally:
        queue.close()


def test_closed_queue_takes_nothing() -> None:
    recorder = Recorder()
    recorder.release.set()
    queue = InProcessQueue(recorder, workers=1)
    queue.close()
    queue.submit(GradeWork(1))
    assert queue.depth() == 0 and recorder.ran == []
