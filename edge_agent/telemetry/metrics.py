"""Every Prometheus metric the daemon exports, defined in one place.

Components import the metric they update from here; ``/metrics`` serves :data:`REGISTRY`. A dedicated
registry (not prometheus_client's global one) holds exactly these plus the process collector, and lets
tests read values through :func:`sample`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from edge_agent import __build__, __version__

REGISTRY = CollectorRegistry(auto_describe=True)
# The daemon's own RSS, CPU seconds and open files (process_*), for the RSS <= 300 MB target and leaks.
ProcessCollector(registry=REGISTRY)
BUILD_INFO = Gauge(
    "edge_build_info",
    "1, labelled with the edge-agent version running and its build (install.sh's release id; dev: a "
    "source checkout).",
    ["version", "build"],
    registry=REGISTRY,
)
BUILD_INFO.labels(__version__, __build__).set(1)

# Buckets from 50 µs to 2.5 s: the knowledge-tracing step runs in ~0.1 ms, a face frame in ~5-20 ms.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

INFERENCE_REQUESTS = Counter(
    "edge_inference_requests",
    "Inference requests by engine, backend and outcome (ok, error, or rejected: bad input).",
    ["engine", "backend", "outcome"],
    registry=REGISTRY,
)
INFERENCE_LATENCY = Histogram(
    "edge_inference_latency_seconds",
    "Latency by engine and stage (queue, pre, infer, post; store: the KT batch's SQLite commit).",
    ["engine", "stage"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENGINE_LOAD_FAILURES = Counter(
    "edge_engine_load_failures",
    "Engine build or load failures by engine, backend and reason; backend=\"any\": no backend could run it.",
    ["engine", "backend", "reason"],
    registry=REGISTRY,
)
ENGINE_CACHE_MISSES = Counter(
    "edge_engine_cache_misses",
    "Engine cache misses by reason (absent, corrupt, stale).",
    ["engine", "reason"],
    registry=REGISTRY,
)
ENGINES_UP = Gauge(
    "edge_engines_up",
    "1 for each engine loaded, by engine, backend and precision.",
    ["engine", "backend", "precision"],
    registry=REGISTRY,
)
PENDING_REQUESTS = Gauge(
    "edge_pending_requests",
    "Requests waiting for inference, by engine.",
    ["engine"],
    registry=REGISTRY,
)
ANSWER_FEEDBACK_LATENCY = Histogram(
    "edge_answer_feedback_seconds",
    "From an answer's arrival to its feedback being ready.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
GC_PAUSE = Histogram(
    "edge_gc_pause_seconds",
    "Python garbage-collector passes by generation; every thread waits while one runs.",
    ["generation"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ANSWERS = Counter(
    "edge_answers",
    "Answers by outcome (applied, duplicate, conflict, rejected, overloaded, unavailable, failed); a "
    "rejected request, and one refused while knowledge tracing starts or stops (unavailable), counts once, "
    "however many answers it held (nothing in it is applied).",
    ["outcome"],
    registry=REGISTRY,
)

ANSWERS_CLOCK_AHEAD = Counter(
    "edge_answers_clock_ahead",
    "Answers stamped more than kt.max_future_skew_s ahead of the board's clock, taken because that clock "
    "is not NTP-synchronised (with it synchronised they are refused): the board's clock is probably behind.",
    registry=REGISTRY,
)

CLOCK_SYNCHRONISED = Gauge(
    "edge_clock_synchronised",
    "1 while the board's clock is known to be right (systemd-timesyncd or chrony synchronised), else 0: the "
    "times it stamps (windows, the items it syncs) may be off, by days on a board without an RTC battery.",
    registry=REGISTRY,
)

TEACHER_VIEW_STREAMS = Gauge(
    "edge_teacher_view_streams", "Open teacher-view event streams (browsers watching).", registry=REGISTRY
)
KT_STUDENTS_ERASED = Counter(
    "edge_kt_students_erased",
    "Students whose learning data was erased: on request (POST /api/v1/students/erase) or by retention "
    "(kt.student_state_max_age_days without an answer).",
    ["reason"],
    registry=REGISTRY,
)
KT_STUDENTS_FORGOTTEN = Counter(
    "edge_kt_students_forgotten",
    "Student states forgotten because kt.max_students were kept (the one not seen longest goes).",
    registry=REGISTRY,
)
WEB_AUTH_FAILURES = Counter(
    "edge_web_auth_failures", "Wrong web tokens presented (header, cookie, query or sign-in form).",
    registry=REGISTRY,
)
WEB_CROSS_SITE_REFUSED = Counter(
    "edge_web_cross_site_refused", "Requests refused because a page of another web site made them.",
    ["server"], registry=REGISTRY,
)
WEB_CLIENT_REQUESTS = Counter(
    "edge_web_client_requests", "Answer posts let in by a clicker's own token, by client name "
    "(web.client_tokens_file).", ["client"], registry=REGISTRY,
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "edge_http_connections_refused",
    "Connections closed on the web or metrics port (port) by reason: per_peer (over the limit from one "
    "address), total (over the limit in all), head_timeout (no complete request head in time), "
    "body_timeout (a request body not all there in time: answered 408), bad_body (a body that cannot be "
    "decoded, e.g. Content-Encoding: gzip over bytes that are not: answered 400), client_gone (the client "
    "closed its connection before its request body was all there).",
    ["port", "reason"],
    registry=REGISTRY,
)
TEACHER_VIEW_DROPS = Counter(
    "edge_teacher_view_drops",
    "Teacher-view losses by reason: slow_subscriber (an update a busy browser did not take; it gets the "
    "whole board instead), stream_refused (over the limit of open views), stream_stalled (a browser that "
    "took no data).",
    ["reason"],
    registry=REGISTRY,
)

OUTBOX_BACKLOG = Gauge("edge_outbox_backlog", "Outbox rows waiting to be sent.", registry=REGISTRY)
OUTBOX_OLDEST_AGE = Gauge(
    "edge_outbox_oldest_age_seconds", "Age of the oldest unsent outbox row.", registry=REGISTRY
)
OUTBOX_BYTES = Gauge("edge_outbox_bytes", "Payload bytes held in the outbox.", registry=REGISTRY)
OUTBOX_DROPS = Counter(
    "edge_outbox_drops",
    "Outbox rows dropped, by reason (max_rows, max_bytes, max_age, expired, queue_full, store_error, "
    "rejected: not JSON or too large, never stored; too_large_for_broker: over the broker's packet limit; "
    "damaged: unsent rows lost with a damaged database).",
    ["reason"],
    registry=REGISTRY,
)
MQTT_CONNECTED = Gauge("edge_mqtt_connected", "1 while connected to the broker.", registry=REGISTRY)
MQTT_RECONNECTS = Counter("edge_mqtt_reconnects", "Connection attempts after a loss.", registry=REGISTRY)
MQTT_PUBLISHED = Counter(
    "edge_mqtt_published", "Messages acknowledged by the broker, by stream.", ["stream"], registry=REGISTRY
)
MQTT_REJECTED = Counter(
    "edge_mqtt_rejected", "Inbound messages rejected, by reason.", ["reason"], registry=REGISTRY
)

CAMERA_FRAMES = Counter("edge_camera_frames", "Frames read from the camera.", registry=REGISTRY)
CAMERA_FRAMES_ANALYSED = Counter(
    "edge_camera_frames_analysed", "Frames run through detection and pose.", registry=REGISTRY
)
CAMERA_FRAMES_DROPPED = Counter(
    "edge_camera_frames_dropped",
    "Frames skipped: analysis busy, a corrupt frame, analysis failed, or the teacher paused meanwhile.",
    ["reason"],
    registry=REGISTRY,
)
CAMERA_FPS = Gauge("edge_camera_analysis_fps", "Frames analysed per second (recent).", registry=REGISTRY)
CAMERA_RECONNECTS = Counter("edge_camera_reconnects", "Camera reopen attempts.", registry=REGISTRY)
CAMERA_STALLS = Counter(
    "edge_camera_stalls", "Times the camera delivered nothing for too long.", registry=REGISTRY
)

GPU_UTILISATION = Gauge("edge_gpu_utilisation_ratio", "GPU load, 0 to 1.", registry=REGISTRY)
GPU_MEMORY_USED = Gauge("edge_gpu_memory_used_bytes", "GPU memory in use.", registry=REGISTRY)
SOC_TEMPERATURE = Gauge(
    "edge_soc_temperature_celsius", "Thermal zone temperatures.", ["zone"], registry=REGISTRY
)
POWER = Gauge("edge_power_watts", "Power by rail, where the board reports it.", ["rail"], registry=REGISTRY)
TELEMETRY_SOURCE = Gauge(
    "edge_telemetry_source",
    "1 for the telemetry source in use (sysfs, jtop, nvml, none).",
    ["source"],
    registry=REGISTRY,
)

CERTIFICATE_EXPIRY = Gauge(
    "edge_certificate_expiry_seconds",
    "Seconds until the first certificate in each certificate file the config names expires (negative once "
    "expired), by its config key (mqtt.cert_file, mqtt.ca_file, web.tls_cert_file, metrics.tls_cert_file); "
    "read at start and hourly, absent while the file cannot be read.",
    ["file"],
    registry=REGISTRY,
)

COMPONENT_UP = Gauge(
    "edge_component_up",
    "1 when a daemon component runs, 0 when degraded or stopped.",
    ["component"],
    registry=REGISTRY,
)
MODEL_VERSION = Gauge(
    "edge_model_version_info",
    "1 for the model package version running, by model.",
    ["model", "version"],
    registry=REGISTRY,
)
ALERTS = Counter("edge_alerts", "Alerts raised, by kind.", ["kind"], registry=REGISTRY)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one sample (0.0 when it was never set); for status pages and tests."""
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


# Labelled counters exist at 0 from the start: Prometheus's increase() and rate() cannot see a series
# whose first sample is already 1, so an alert on the first rejected answer or dropped row would never fire.
for _outcome in ("applied", "duplicate", "conflict", "rejected", "overloaded", "unavailable", "failed"):
    ANSWERS.labels(_outcome)
for _reason in ("max_rows", "max_bytes", "max_age", "expired", "queue_full", "store_error", "rejected",
                "too_large_for_broker", "damaged"):
    OUTBOX_DROPS.labels(_reason)
for _reason in ("slow_subscriber", "stream_refused", "stream_stalled"):
    TEACHER_VIEW_DROPS.labels(_reason)
for _port in ("web", "metrics"):
    for _reason in ("per_peer", "total", "head_timeout", "body_timeout", "bad_body", "client_gone"):
        HTTP_CONNECTIONS_REFUSED.labels(_port, _reason)
for _kind in ("start", "store_corrupt", "model_rollback", "model_update_refused", "model_update_dropped"):
    ALERTS.labels(_kind)
