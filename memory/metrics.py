"""The service's Prometheus metrics, on one registry that ``GET /metrics`` serves.

Labels are bounded and name no caller: transports, trust levels, outcomes, services and error
kinds only; never a number, a call id or an agent's caller key.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CALLS = Counter(
    "rapport_calls",
    "Calls taken, by transport, caller trust level and how they ended.",
    ["transport", "trust", "outcome"],
    registry=REGISTRY,
)
ACTIVE_CALLS = Gauge("rapport_active_calls", "Calls in progress.", registry=REGISTRY)
MEMORY_LOAD = Histogram(
    "rapport_memory_load_seconds",
    "Call start to caller memory ready (calls with memory to load).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
RECALL = Histogram(
    "rapport_recall_seconds",
    "Time one turn spent recalling memories.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1),
    registry=REGISTRY,
)
VOICE_TO_VOICE = Histogram(
    "rapport_voice_to_voice_seconds",
    "Caller stops speaking to bot starts speaking, per turn.",
    buckets=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0),
    registry=REGISTRY,
)
ANALYSIS_DURATION = Histogram(
    "rapport_analysis_duration_seconds",
    "One post-call analysis job, end to end, by outcome.",
    ["outcome"],
    buckets=(0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "rapport_analysis_queue_depth",
    "Analysis jobs waiting (not yet delivered) and pending (delivered, not acknowledged).",
    ["state"],
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "rapport_analysis_dead_letters", "Analysis jobs that failed for good.", registry=REGISTRY
)
REDIS_UP = Gauge("rapport_redis_up", "1 when Redis answered the last check.", registry=REGISTRY)
HISTORY_UP = Gauge(
    "rapport_history_up",
    "1 when the call history's database answered the last check or write, 0 when it did not.",
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "rapport_redis_errors", "Redis commands that failed, by kind.", ["kind"], registry=REGISTRY
)
SERVICE_ERRORS = Counter(
    "rapport_service_errors",
    "Failed requests to a cloud service (llm, stt, tts, analysis_llm, webhook), by kind "
    "(auth, unreachable, rate_limited, other).",
    ["service", "kind"],
    registry=REGISTRY,
)
