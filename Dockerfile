# The service's one image: web (gunicorn), Celery worker and beat run it with different
# commands (docker-compose.yml). Slim Python, pinned; runs as a non-root user.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes. Every
# package ships a wheel, so no compiler is needed.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code stays owned by root (read-only for the app user); only the folders the
# processes write to belong to it: beat's schedule (a volume) and Prometheus' counters.
COPY . .
# Static files (the dashboard's) are gathered at build time; settings need a database and
# broker URL to load, not a connection.
RUN DATABASE_URL=postgresql://build@localhost/build CELERY_BROKER_URL=redis://localhost:6379/0 \
        python manage.py collectstatic --noinput --verbosity 0 \
    && mkdir -p /beat /tmp/prometheus \
    && chown app:app /beat /tmp/prometheus

USER app
EXPOSE 8000
# Health checks: scripts/healthcheck.py web|worker|beat (docker-compose.yml runs them).
CMD ["gunicorn", "main.wsgi", "--bind", "0.0.0.0:8000"]
