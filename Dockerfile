# syntax=docker/dockerfile:1
# The grader's image: the API (`grader serve`, the default command), the grading workers
# (`grader worker`) and the one-shot `grader grade` all run from it. See docs/deploy.md.

# ---- build: compile what has no wheel, install the package and its dependencies into a venv ----
FROM python:3.11-slim-bookworm AS build

# A compiler only for dependencies that ship no wheel for this platform; this stage is discarded.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY grader ./grader
COPY reference ./reference
# The project's runtime dependencies include the course's own package list (numpy, scipy,
# opencv-python-headless, matplotlib), so submissions that import them run as they did for the student.
RUN pip install --no-cache-dir . \
    && python -c "import numpy, scipy, cv2, matplotlib, grader.cli"

# ---- runtime: the venv on a clean slim base, no compiler, no pip cache, a non-root user ----
FROM python:3.11-slim-bookworm AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp \
    OPENBLAS_NUM_THREADS=1 \
    GRADER_DATA_DIR=/var/lib/grader

# The service's own account. Sandboxed runs use a separate uid range (61000 and up) when the
# container is allowed to switch uids (docs/deploy.md, "Sandbox layers per deployment").
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/grader --create-home \
        --shell /usr/sbin/nologin grader

COPY --from=build /opt/venv /opt/venv

WORKDIR /var/lib/grader
USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Binding 0.0.0.0 makes the service refuse to start unless GRADER_API_TOKENS is set.
CMD ["grader", "serve", "--host", "0.0.0.0", "--port", "8000"]
