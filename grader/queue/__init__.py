"""Scale-out grading on Redis (Dramatiq): the service enqueues work items, `grader worker` processes run them."""

from grader.queue.broker import QueueConfig

__all__ = ["QueueConfig"]
