# Rapport phone agent. Build: docker build -t rapport .   Run: docker run --init -p 7860:7860 --env-file .env rapport
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAPPORT_DATA_DIR=/app/data

WORKDIR /app
RUN useradd --create-home --uid 10001 rapport

# Dependencies first, in their own layer: code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir memory bot processors cli web \
    && touch memory/__init__.py bot/__init__.py processors/__init__.py cli/__init__.py web/__init__.py \
    && pip install . \
    && pip uninstall -y rapport \
    && rm -rf memory bot processors cli web

COPY . .
RUN pip install --no-deps . && mkdir -p data && chown -R rapport:rapport /app

USER rapport
EXPOSE 7860
# --init in `docker run` reaps the embedded Redis when it exits; with REDIS_URL set none is started.
CMD ["python", "runner.py", "--host", "0.0.0.0"]
