# syntax=docker/dockerfile:1
# lead-sla container image.
#   docker build -t lead-sla .
#   docker run --rm -p 8000:8000 lead-sla            # SQLite in /var/lib/lead-sla, example policies
# Migrations: `lead-sla serve` applies them before serving; run `lead-sla migrate` as a separate
# step (compose "migrate" service, Kubernetes Job) to do it once per release instead.
# See docs/operations/deploy.md.

ARG PYTHON_VERSION=3.12

# --- builder: build the wheel and install it with its dependencies into a virtualenv ---------
FROM python:${PYTHON_VERSION}-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service

RUN pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/lead-sla \
 && /opt/lead-sla/bin/pip install /dist/*.whl

# --- runtime: the virtualenv on a clean slim image, no compilers, non-root -------------------
FROM python:${PYTHON_VERSION}-slim AS runtime

LABEL org.opencontainers.image.title="lead-sla" \
      org.opencontainers.image.description="SLA clocks on sales leads: reminders, escalations, compliance metrics." \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/lead-sla/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 lead-sla \
 && useradd --system --uid 10001 --gid lead-sla --no-create-home \
        --home-dir /var/lib/lead-sla --shell /usr/sbin/nologin lead-sla \
 && install --directory --owner=lead-sla --group=lead-sla --mode=0750 /var/lib/lead-sla

COPY --from=builder /opt/lead-sla /opt/lead-sla

# The default SQLite database (./lead-sla.db) lands here; mount a volume to keep it.
WORKDIR /var/lib/lead-sla
USER 10001:10001
EXPOSE 8000

# No curl in the slim image: ask /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["lead-sla"]
CMD ["serve", "--host", "0.0.0.0"]
