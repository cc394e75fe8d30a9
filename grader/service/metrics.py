"""Prometheus metrics: requests, grading durations, queue depth and sandbox limits hit."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grader.service.jobs import Outcome

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    """One registry per app, so several apps (tests) never collide on metric names."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "grader_http_requests", "HTTP requests served", ["method", "route", "status"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "grader_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.grading_seconds = Histogram(
            "grader_grading_duration_seconds",
            "Time to grade one submission (sandbox run and scoring)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.graded = Counter("grader_submissions_graded", "Submissions graded", ["outcome"], registry=self.registry)
        self.breaches = Counter(
            "grader_sandbox_limits_hit",
            "Sandbox limits submissions ran into (time, memory, cpu, ...)",
            ["limit"],
            registry=self.registry,
        )
        self.queue_depth = Gauge("grader_queue_depth", "Grading work items waiting", registry=self.registry)
        self.jobs_running = Gauge("grader_jobs_running", "Grading work items running", registry=self.registry)

    def watch_queue(self, depth: Callable[[], int], running: Callable[[], int]) -> None:
        self.queue_depth.set_function(lambda: float(depth()))
        self.jobs_running.set_function(lambda: float(running()))

    def observe(self, outcome: Outcome) -> None:
        if outcome.report is not None:
            self.grading_seconds.observe(outcome.report.seconds)
            self.graded.labels("recorded" if outcome.recorded else "duplicate").inc()
            for limit in outcome.report.limits_hit:
                self.breaches.labels(limit).inc()
        elif outcome.error is not None:
            self.graded.labels("failed").inc()


class MetricsMiddleware:
    """Counts requests by route template (not raw path, which would make one series per id)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.request_seconds.labels(method, template).observe(time.perf_counter() - started)
