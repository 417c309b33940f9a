"""The daemon's configuration: one TOML file validated by pydantic models.

Every key has a default that suits a board provisioned by ``provisioning/provision.py``, so a config file
only names what differs. Unknown keys are errors (``extra="forbid"``): a typo must not silently fall back
to a default. Only the daemon itself starts with them left out and named in its log and in ``doctor``
(load_config_ignoring_unknown): after a rollback, a newer release's key must not keep a board down.
``load_config`` collects every problem with its key path and, where it can, the line.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import errno
import grp
import ipaddress
import os
import pwd
import re
import socket
import ssl
import stat
import sys
import tempfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge_agent.errors import ConfigError
from edge_agent.vision.camera_hours import CameraHours, board_zone

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6 ships Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/config.toml")
CONFIG_ENV = "EDGE_AGENT_CONFIG"

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # safe inside MQTT topics and file names
MAX_DISPLAY_NAME_CHARS = 32  # device.display_name: fits the teacher view's header and a browser tab
HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*$")


class Section(BaseModel):
    # allow_inf_nan=False: TOML has inf and nan, and each crashed at run time what it reached (a wait, an
    # int(): mqtt.message_expiry_days = inf ended every MQTT session with OverflowError)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_true_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic takes true as 1: kt.min_group_size = true passed as 1, k-anonymity off (a review)
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and field.annotation in (int, float):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        # no file name holds a NUL (TOML writes one as \u0000): every stat() raised ValueError, a traceback
        # from `config check` and the daemon's start (a review)
        if isinstance(value, (str, Path)) and "\x00" in str(value):
            raise ValueError("holds a NUL character (\\u0000), which no file name or text here may hold")
        return value

# The longest wait a time key may ask for: each reaches an Event.wait, a socket timeout or an int(), which
# raise OverflowError past about 9.2e9 s, and no board is helped by a wait longer than an hour.
MAX_WAIT_S = 3600.0
MAX_DAYS = 3650.0  # ten years


def _empty_means_none(value: object) -> object:
    return None if value == "" else value


# A file a key may leave unset: in TOML (which has no null) an empty string unsets it (a review: "" was
# Path("."), refused as a relative path, where the README said "empty means ...").
OptionalFile = Annotated[Path | None, BeforeValidator(_empty_means_none)]


class DeviceSettings(Section):
    """Who this board is; the ids become the MQTT topic prefix edge/{tenant}/{site}/{device_id}."""

    tenant: str = Field("demo-district", pattern=_ID)
    site: str = Field("demo-school", pattern=_ID)
    class_id: str = Field("class-1", pattern=_ID, description="The classroom this board hangs in.")
    display_name: str | None = Field(
        None,
        description='The class as the teacher view names it in its header and browser tab, in any '
        'script, e.g. "初一（3）班" (1-32 characters, no control characters). Unset: device.class_id.',
    )
    device_id: str = Field("board-0001", pattern=_ID)
    pseudonym_secret_file: Path = Field(
        Path("/etc/edge-agent/secrets/pseudonym.key"),
        description="Secret (32+ random bytes, mode 0600) keying HMAC-SHA256 of student ids.",
    )
    timezone: str = Field(
        "",
        description='The school\'s time zone for camera.active_hours and camera.closed_dates, e.g. '
        '"Asia/Shanghai". Empty: the operating system\'s zone (often UTC on a freshly flashed board).',
    )

    @field_validator("class_id", mode="before")
    @classmethod
    def _ascii_class_id(cls, value: Any) -> Any:
        # Before the pattern, which said only "should match pattern '^[A-Za-z0-9]...'" to IT who had
        # typed the class's Chinese name (a review)
        if isinstance(value, str) and not value.isascii():
            raise ValueError("class_id may hold letters, digits and _ . - only (it goes into MQTT topics and "
                             f"file names); put a Chinese class name in device.display_name (the file says "
                             f"{value!r})")
        return value

    @field_validator("display_name")
    @classmethod
    def _display_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip()
        if not 1 <= len(name) <= MAX_DISPLAY_NAME_CHARS:
            raise ValueError(f"must hold 1 to {MAX_DISPLAY_NAME_CHARS} characters besides spaces, not "
                             f"{len(name)} (leave it out to show device.class_id)")
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
            raise ValueError("must not hold control characters (a tab, a line break, an invisible mark)")
        return name

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        board_zone(value)
        return value


class PathSettings(Section):
    state_dir: Path = Path("/var/lib/edge-agent")
    cache_dir: Path = Field(Path("/var/cache/edge-agent"), description="Fetched models and built engines.")
    model_mirror: OptionalFile = Field(
        None, description="Local directory mirroring model files; tried before the official URLs."
    )


class InferenceSettings(Section):
    backend: Literal["auto", "tensorrt", "onnxruntime"] = "auto"
    workspace_mib: int = Field(512, ge=16, le=16384, description="TensorRT builder workspace limit.")
    face_precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16", description="int8 needs a Q/DQ model first: edge-agent engines quantize yunet --data PHOTOS "
        "(without a usable one TensorRT builds fp16, ONNX Runtime runs fp32, and the health says so)."
    )
    pose_precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16",
        description="int8 needs a Q/DQ model first (edge-agent engines quantize, which refuses one less "
        "accurate than 3 degrees on average: fsanet-1x1's is); without a usable one TensorRT builds fp16, "
        "ONNX Runtime runs fp32.",
    )
    kt_precision: Literal["fp32", "fp16", "int8"] = "fp32"
    intra_op_threads: int = Field(1, ge=1, le=16, description="ONNX Runtime threads per engine.")
    face_threads: int = Field(
        2,
        ge=1,
        le=16,
        description="ONNX Runtime threads for the face detector (2 halve its latency on 2 cores).",
    )


class KTSettings(Section):
    enabled: bool = True
    package_dir: OptionalFile = Field(
        None, description="Knowledge-tracing model package; empty means the one shipped in engines/."
    )
    microbatch_max: int = Field(64, ge=1, le=1024)
    microbatch_wait_ms: float = Field(2.0, ge=0.0, le=100.0)
    max_answers_per_request: int = Field(200, ge=1, le=10000)
    max_future_skew_s: float = Field(
        300.0, ge=0.0, description="Answers timestamped further ahead are refused while the board's clock is "
        "NTP-synchronised; with it not, they are taken (up to 30 days ahead), counted and flagged."
    )
    target_success: float = Field(
        0.7, gt=0.0, lt=1.0, description="Recommend items with this predicted success."
    )
    recommendations: int = Field(3, ge=0, le=50)
    weak_skills: int = Field(3, ge=1, le=50)
    min_group_size: int = Field(5, ge=1, description=(
        "Class aggregates over fewer students are suppressed, and so is a skill's class figure when fewer "
        "of the lesson's students have answered on it."))
    mastery_threshold: float = Field(0.6, gt=0.0, lt=1.0)
    lesson_window_s: float = Field(
        300.0, ge=10.0, description="Class aggregates are synced in windows this long."
    )
    lesson_gap_s: float = Field(
        600.0, ge=10.0, description="The teacher view's lesson ends this long after its last answer; its "
        "attention chart starts again after a break this long with no window (at least two "
        "attention.window_s)."
    )
    per_student_api: bool = Field(False, description="Allow GET of one pseudonymous student's mastery.")
    queue_max: int = Field(
        2048, ge=1, le=100_000, description="Answers waiting for inference; more get HTTP 503."
    )
    feedback_timeout_s: float = Field(
        10.0, gt=0.0, le=300.0, description="An answer not done by then gets HTTP 503."
    )
    max_students: int = Field(
        10_000, ge=100, le=1_000_000,
        description="Student states kept (about 1.7 KB of memory each, with its last 100 answers); beyond it "
        "the one not seen longest is forgotten and starts again from the model's prior.",
    )
    student_state_max_age_days: int = Field(
        400, ge=0, le=36_500,
        description="A student's learning state not updated for this many days is deleted (checked daily, "
        "while the board's clock is NTP-synchronised; a school year and the summer); 0 keeps them for "
        "ever. States updated since the daemon started are kept, and none is deleted while the clock would "
        "make even the newest look expired (README 'Privacy').",
    )
    roster_file: OptionalFile = Field(
        None,
        description="The class roster (student pseudonyms, made by `edge-agent kt roster`): answers for "
        "anyone else are refused. Empty means any student id is taken.",
    )


class UpdateSettings(Section):
    """Signed model updates (knowledge tracing): a package tar dropped into the inbox or sent by command."""

    enabled: bool | None = Field(
        None, description="Left out: on when public_key_file exists; false switches updates off."
    )
    public_key_file: Path = Field(
        Path("/etc/edge-agent/model-signing.pub"), description="Trusted ed25519 key of the fleet's signer."
    )
    models_dir: OptionalFile = Field(None, description="Installed versions; empty means state_dir/models.")
    inbox_dir: OptionalFile = Field(None, description="Drop package tars here; empty means state_dir/inbox.")
    poll_interval_s: float = Field(5.0, ge=0.1, le=3600.0)
    download_timeout_s: float = Field(60.0, gt=0.0, le=3600.0)
    max_download_bytes: int = Field(512 * 1024 * 1024, ge=1024, le=4 * 1024**3)
    download_ca_file: OptionalFile = Field(
        None, description="Extra CA for the update server (private PKI); the system store is always used."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Update servers a model_update command may name (host names or addresses, redirects "
        "included); empty means any https host.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        for host in value:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                if not HOST_NAME.fullmatch(host):
                    raise ValueError(
                        f"{host!r} is not a host name (no scheme, port or path: updates.district.example)"
                    ) from None
        return [host.lower() for host in value]


class CameraSettings(Section):
    enabled: bool = True
    source: str = Field(
        "0", description="V4L2 index, /dev/videoN or a link to one (/dev/v4l/by-id/...), GStreamer "
        "pipeline, rtsp:// URL, file, or folder."
    )
    analysis_fps: float = Field(5.0, gt=0.0, le=60.0)
    width: int = Field(
        640, ge=64, le=4096,
        description="Asked of the camera. Faces are found at 640 px on the longer side whatever it gives: a "
        "wider frame is shrunk (averaging pixels from 1280 px up), so it costs CPU and finds few more faces.",
    )
    height: int = Field(480, ge=64, le=4096)
    reconnect_min_s: float = Field(
        1.0,
        ge=0.1,
        le=3600.0,
        description="The first wait before reopening a camera that failed or dropped; it doubles up to "
        "reconnect_max_s until a session delivers frames for stall_timeout_s.",
    )
    reconnect_max_s: float = Field(60.0, gt=0.0, le=3600.0)
    stall_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)
    active_hours: list[str] = Field(
        default_factory=list,
        description='When the camera may run, in the board\'s local time, e.g. ["mon-fri 07:30-17:30", '
        '"sat 08:00-12:00"]; outside these hours it is closed and no frame is read. Empty: always.',
    )
    closed_dates: list[str] = Field(
        default_factory=list,
        description='Days the camera stays closed all day (holidays, closures), in the board\'s local '
        'time, e.g. ["2026-10-01..2026-10-07", "2027-01-01"]; first and last day included.',
    )

    @field_validator("source")
    @classmethod
    def _named_source(cls, value: str, info: ValidationInfo) -> str:
        # "" reads as the folder "." (Path("")): under systemd, "/", whose every picture became class frames.
        # With the camera off it is never opened: earlier releases took "" there, and refusing it stopped an
        # upgraded board, told to set what it had set (enabled is validated first: it comes first).
        if not value.strip() and info.data.get("enabled", True):
            raise ValueError("is empty: name the camera (0, /dev/video0, an rtsp:// URL, a file or a "
                             "folder), or set camera.enabled = false to turn it off")
        # spaces around it are a copy-paste's, no part of it (a review: " /dev/video0" ended the camera's
        # thread for good while config check said OK)
        return value.strip()

    @field_validator("active_hours")
    @classmethod
    def _readable_hours(cls, value: list[str]) -> list[str]:
        CameraHours.parse(value)
        return value

    @field_validator("closed_dates")
    @classmethod
    def _readable_dates(cls, value: list[str]) -> list[str]:
        CameraHours.parse([], value)
        return value

    def hours(self) -> CameraHours | None:
        """The camera's hours less its closed days, or None when it may always run."""
        if not self.active_hours and not self.closed_dates:
            return None
        return CameraHours.parse(self.active_hours, self.closed_dates)

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class AttentionSettings(Section):
    pose_method: Literal["fsanet", "landmarks"] = "fsanet"
    score_threshold: float = Field(0.6, gt=0.0, lt=1.0)
    nms_threshold: float = Field(0.3, gt=0.0, lt=1.0)
    yaw_limit_deg: float = Field(30.0, gt=0.0, le=90.0)
    pitch_limit_deg: float = Field(25.0, gt=0.0, le=90.0)
    calibration_yaw_deg: float = Field(
        0.0, ge=-90.0, le=90.0, description="Yaw of a face looking at the board."
    )
    calibration_pitch_deg: float = Field(0.0, ge=-90.0, le=90.0)
    smoothing_frames: int = Field(5, ge=1, le=100)
    pose_refresh_frames: int = Field(
        3, ge=1, le=30, description="Re-estimate a tracked face's head pose every this many analysed frames."
    )
    window_s: float = Field(
        60.0, ge=5.0, le=3600.0, description="Attention is summarised and synced in windows this long."
    )
    low_attention_share: float = Field(0.5, ge=0.0, le=1.0)
    low_attention_windows: int = Field(3, ge=1)
    min_faces: int = Field(3, ge=1, description="Windows with fewer faces on average are suppressed.")
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority (nice) of the camera threads and the face and pose models' threads; "
        "10 lets answers take a core first on a busy board, 0 runs them like the answer path.",
    )


class StoreSettings(Section):
    max_rows: int = Field(500_000, ge=100, description="Unsent aggregates kept; beyond, the oldest dropped.")
    max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Payload bytes of the unsent aggregates kept; beyond, the oldest are dropped. Not a cap "
        "on the database file, which holds more (indexes, pages freed by sent rows).",
    )
    max_age_days: float = Field(
        60.0,
        gt=0.0,
        le=MAX_DAYS,
        description="Unsent aggregates older than this are dropped (counted as max_age), only while the "
        "board's clock is NTP-synchronised.",
    )
    busy_timeout_ms: int = Field(5000, ge=100, le=600_000)
    cache_kib: int = Field(
        256,
        ge=16,
        le=65536,
        description="SQLite page cache per connection, bounded so the daemon's memory stays flat while the "
        "database grows (SQLite's own default is 2 MiB per connection).",
    )


def _bare_host(value: str, info: ValidationInfo, example: str) -> str:
    """``value`` stripped, when it is an IP address or a host name; else ValueError saying what to write.
    A review: "127.0.0.1 " (a copy-paste's space), "http://127.0.0.1" and "mqtts://broker:8883" passed
    config check, and the listener or the broker connection failed at run time."""
    host = value.strip()
    if not host:
        if info.data.get("enabled", True):
            raise ValueError(f"is empty: name a host name or an IP address, e.g. {example}")
        return host
    user, _, rest = host.rpartition("://")[2].rpartition("@")  # a password may hold a "/"
    rest = rest.split("/", 1)[0]  # no path, no user
    # A password typed with the user (mqtts://board7:Pa55word@broker) is not repeated: this message goes
    # to the log, the heartbeat's config_reload refusal and support bundles (a review)
    shown = without_credentials(host.replace(f"{user}@", "***@", 1) if user else host)
    bare, port = rest, ""
    if rest.startswith("[") and "]" in rest:  # [::1] or [::1]:8883
        bare, _, after = rest[1:].partition("]")
        port = after.removeprefix(":")
    elif rest.count(":") == 1:  # host:port (an IPv6 address holds more than one)
        bare, port = rest.split(":")
    if bare != host:
        said = f'write host = "{bare}"' + (f" and port = {port}" if port.isdigit() else "")
        what = "a scheme" if "://" in host else "a port" if port else "more than the host"
        raise ValueError(f"{shown!r} holds {what}: the host alone goes here; {said}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not HOST_NAME.fullmatch(host.removesuffix(".")):  # a trailing dot: a fully qualified name
            raise ValueError(f"{shown!r} is not a host name or an IP address (e.g. {example})") from None
    return host


class MqttSettings(Section):
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(8883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = Field(
        "5",
        description="3.1.1 only for a broker without MQTT 5: under it a broker cannot refuse a message, so "
        "one its ACL refuses is acknowledged, deleted here and lost (the receiver sees a gap in seq); "
        "MQTT 5 keeps it until the ACL is fixed.",
    )
    tls: bool = True
    ca_file: Path = Path("/etc/edge-agent/certs/ca.pem")
    cert_file: Path = Path("/etc/edge-agent/certs/device.pem")
    key_file: Path = Path("/etc/edge-agent/secrets/device.key")
    keepalive_s: int = Field(60, ge=5, le=3600)
    inflight_max: int = Field(20, ge=1, le=20)
    batch_max: int = Field(100, ge=1, le=1000, description="Aggregates per message while draining a backlog.")
    max_message_bytes: int = Field(
        256 * 1024, ge=8 * 1024, le=256 * 1024,
        description="Largest message payload sent. Set it to the broker's message_size_limit where that is "
        "lower (Mosquitto sets none by default): under MQTT 3.1.1 the broker acknowledges a larger message "
        "and discards it, its rows lost (a gap in seq, no drop counted); over MQTT 5 the board finds the "
        "limit itself, after a few lost sessions.",
    )
    heartbeat_s: float = Field(60.0, ge=5.0, le=MAX_WAIT_S)
    connect_timeout_s: float = Field(10.0, gt=0.0, le=300.0)
    backoff_min_s: float = Field(1.0, gt=0.0, le=MAX_WAIT_S)
    backoff_max_s: float = Field(300.0, gt=0.0, le=MAX_WAIT_S)
    message_expiry_days: float = Field(
        30.0, gt=0.0, le=MAX_DAYS,
        description="How long the broker may hold a message for an absent consumer (MQTT 5 expiry, "
        "counted from sending). The board keeps unsent data for store.max_age_days."
    )

    @field_validator("host")
    @classmethod
    def _broker_host(cls, value: str, info: ValidationInfo) -> str:
        return _bare_host(value, info, "broker.district.example")

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttSettings:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be >= backoff_min_s")
        return self


def _check_tls_pair(cert_file: Path | None, key_file: Path | None) -> None:
    if (cert_file is None) != (key_file is None):
        raise ValueError("tls_cert_file and tls_key_file go together: set both for HTTPS, or neither")


class WebSettings(Section):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    token_file: OptionalFile = Field(
        Path("/etc/edge-agent/secrets/web.token"),
        description="Token required from any address but loopback; empty means only loopback may look.",
    )
    default_language: Literal["zh-CN", "en"] = "zh-CN"
    tls_cert_file: OptionalFile = Field(
        None,
        description="PEM certificate (with its chain) to serve HTTPS on web.port; empty means plain HTTP. "
        "The device certificate provisioning installs serves (names: device id, <device id>.local).",
    )
    tls_key_file: OptionalFile = Field(None, description="Its private key (mode 0600).")
    client_tokens_file: OptionalFile = Field(
        None,
        description="Tokens for clicker base stations and tablet apps (mode 0600, made by `edge-agent web "
        "clients add NAME`): each may only post answers. The web token stays the teacher's.",
    )

    @field_validator("host")
    @classmethod
    def _listen_host(cls, value: str, info: ValidationInfo) -> str:
        return _bare_host(value, info, "0.0.0.0 (every address) or 127.0.0.1 (this board only)")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        _check_tls_pair(self.tls_cert_file, self.tls_key_file)
        return self


class MetricsSettings(Section):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(9108, ge=1, le=65535)
    token_file: OptionalFile = Field(
        None, description="When set, /metrics needs 'Authorization: Bearer <token>' from the scraper."
    )
    telemetry_interval_s: float = Field(5.0, ge=0.5, le=MAX_WAIT_S)
    tls_cert_file: OptionalFile = Field(
        None,
        description="PEM certificate to serve /metrics over HTTPS (the token then stays off the wire); empty "
        "means plain HTTP. The device certificate provisioning installs serves: Prometheus needs scheme "
        "https and tls_config ca_file (the fleet CA) and server_name edge-agent-board.",
    )
    tls_key_file: OptionalFile = Field(None, description="Its private key (mode 0600).")

    @field_validator("host")
    @classmethod
    def _listen_host(cls, value: str, info: ValidationInfo) -> str:
        return _bare_host(value, info, "0.0.0.0 (every address) or 127.0.0.1 (this board only)")

    @model_validator(mode="after")
    def _tls_pair(self) -> MetricsSettings:
        _check_tls_pair(self.tls_cert_file, self.tls_key_file)
        return self


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "kv"] = "json"


class Config(Section):
    device: DeviceSettings = DeviceSettings()
    paths: PathSettings = PathSettings()
    inference: InferenceSettings = InferenceSettings()
    kt: KTSettings = KTSettings()
    updates: UpdateSettings = UpdateSettings()
    camera: CameraSettings = CameraSettings()
    attention: AttentionSettings = AttentionSettings()
    store: StoreSettings = StoreSettings()
    mqtt: MqttSettings = MqttSettings()
    web: WebSettings = WebSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()

    @field_validator("paths")
    @classmethod
    def _absolute_paths(cls, value: PathSettings) -> PathSettings:
        for name in ("state_dir", "cache_dir"):
            if not getattr(value, name).is_absolute():
                raise ValueError(f"{name} must be an absolute path")
        return value

    @model_validator(mode="after")
    def _own_port(self) -> Config:
        # The daemon holds both ports itself: the second listener failed only at run time, as "address
        # already in use (does another program use it?)", though no other program did. An "after"
        # validator: a field validator does not run on a default (no [metrics] table, web.port = 9108).
        web, metrics = self.web, self.metrics
        same = web.port == metrics.port and _hosts_overlap(web.host, metrics.host)
        if web.enabled and metrics.enabled and same:
            other = "another port" if metrics.port == 9108 else "another (default 9108)"
            raise ValueError(
                f"web.port and metrics.port are both {metrics.port} (hosts {web.host} and {metrics.host}): "
                f"the daemon cannot listen on one port twice; give one of them {other}"
            )
        return self

    @property
    def database_path(self) -> Path:
        return self.paths.state_dir / "edge-agent.db"

    def secret_files(self) -> list[tuple[str, Path]]:
        """The secret files this config needs, as (key path, file)."""
        secrets = [("device.pseudonym_secret_file", self.device.pseudonym_secret_file)]
        if self.mqtt.enabled and self.mqtt.tls:
            secrets.append(("mqtt.key_file", self.mqtt.key_file))
        if self.web.enabled and self.web.token_file is not None:
            secrets.append(("web.token_file", self.web.token_file))
        if self.web.enabled and self.web.tls_key_file is not None:
            secrets.append(("web.tls_key_file", self.web.tls_key_file))
        # A missing clicker tokens file means no clicker tokens (the running daemon reads it so, and IT
        # deletes it to revoke them all): only one that exists must be private. Required, it stopped the
        # next start of a board whose file was deleted as the README says.
        tokens = self.web.client_tokens_file
        if self.web.enabled and tokens is not None and (tokens.exists() or tokens.is_symlink()):
            secrets.append(("web.client_tokens_file", tokens))
        if self.metrics.enabled and self.metrics.token_file is not None:
            secrets.append(("metrics.token_file", self.metrics.token_file))
        # as web's: a missing or world-readable metrics key passed config check (a review)
        if self.metrics.enabled and self.metrics.tls_key_file is not None:
            secrets.append(("metrics.tls_key_file", self.metrics.tls_key_file))
        return secrets

    def required_files(self) -> list[tuple[str, Path]]:
        """Non-secret files this config needs to exist."""
        files: list[tuple[str, Path]] = []
        if self.mqtt.enabled and self.mqtt.tls:
            files += [("mqtt.ca_file", self.mqtt.ca_file), ("mqtt.cert_file", self.mqtt.cert_file)]
        if self.web.enabled and self.web.tls_cert_file is not None:
            files.append(("web.tls_cert_file", self.web.tls_cert_file))
        if self.metrics.enabled and self.metrics.tls_cert_file is not None:
            files.append(("metrics.tls_cert_file", self.metrics.tls_cert_file))
        return files


def _hosts_overlap(a: str, b: str) -> bool:
    """Whether listeners on hosts ``a`` and ``b`` may want the same address: the same host, a wildcard
    (0.0.0.0 and :: take every address), or a name (it may resolve to the other)."""
    try:
        first, second = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return True
    return first == second or first.is_unspecified or second.is_unspecified


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config, then $EDGE_AGENT_CONFIG, then /etc/edge-agent/config.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


def _line_of(text: str, path: tuple[str | int, ...]) -> int | None:
    """Best-effort line number of a key path in TOML text (tables and dotted keys, not inline tables)."""
    keys = [str(p) for p in path if isinstance(p, str)]
    if not keys:
        return None
    lines = text.splitlines()
    table: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        header = re.match(r"^\[\s*([A-Za-z0-9_.\- \"]+?)\s*\]$", line)
        if header:
            table = [part.strip().strip('"') for part in header.group(1).split(".")]
            if table == keys:
                return number
            continue
        assignment = re.match(r"^([A-Za-z0-9_.\-\"]+)\s*=", line)
        if assignment:
            key = table + [part.strip('"') for part in assignment.group(1).split(".")]
            if key == keys[: len(key)] and len(key) >= min(len(keys), len(table) + 1):
                return number
    return None


def _format_location(loc: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate TOML text; raise ConfigError listing every problem with key path and line."""
    return read_config(text, source)[0]


def read_config(
    text: str, source: str = "<config>", *, ignore_unknown: bool = False
) -> tuple[Config, list[str]]:
    """Validate TOML text: the config, and the unknown keys left out when ``ignore_unknown`` (each with
    its line). Any other problem, or an unknown key when not ignoring them, raises ConfigError."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(f"{source} (TOML syntax)", str(exc))]) from exc
    ignored: list[str] = []
    # said with any other problem: "[camera] enable = false" left out, the refusal told IT to set
    # camera.enabled = false, which they believed they had (a review)
    ignored_problems: list[tuple[str, str]] = []
    if ignore_unknown:
        try:
            return Config.model_validate(data), []
        except ValidationError as exc:
            for error in exc.errors():
                if error["type"] == "extra_forbidden":
                    loc = tuple(error["loc"])
                    line, home = _line_of(text, loc), _belongs_in(loc)
                    notes = (f"line {line}" if line else "", f"it belongs in [{home}]" if home else "")
                    said = "; ".join(note for note in notes if note)
                    ignored.append(_format_location(loc) + (f" ({said})" if said else ""))
                    ignored_problems.append((_format_location(loc) + (f" (line {line})" if line else ""),
                                             _ignored_message(loc, home)))
                    _remove(data, loc)
    try:
        return Config.model_validate(data), ignored
    except ValidationError as exc:
        errors = list(exc.errors())
        # A check between keys (min <= max, a TLS pair, two ports) runs only once every key of its section
        # is valid: IT fixed the lines listed and got a new problem at the next start. Checked again with
        # the keys found wrong left out (their defaults instead), one pass lists them all.
        trimmed = copy.deepcopy(data)
        left_out: set[str] = set()
        for error in errors:
            loc = tuple(error["loc"])
            if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], str):
                _remove(trimmed, loc[:2])
                left_out.add(loc[1])
        try:
            Config.model_validate(trimmed)
        except ValidationError as again:
            seen = {(tuple(e["loc"]), e["msg"]) for e in errors}
            # not a check against a key left out: it compared the default, not what the file says (round 2:
            # backoff_min_s = "0.2s" with backoff_max_s = 0.5 was also told max >= min)
            errors += [e for e in again.errors() if (tuple(e["loc"]), e["msg"]) not in seen
                       and not any(re.search(rf"\b{re.escape(key)}\b", e["msg"]) for key in left_out)]
        problems = []
        for error in errors:
            loc = _key_of_check(tuple(error["loc"]), error)
            message = error["msg"]
            if error["type"] in _RANGE_ERRORS and (allowed := _range_of(loc)):
                # pydantic names the bound broken, not the value or the other bound (a review)
                message = f"{message} (the file says {error['input']!r}; allowed: {allowed})"
            if error["type"] == "extra_forbidden":
                home = _belongs_in(loc)
                message = (f"not a key of this section: it belongs in [{home}]" if home
                           else "unknown key (check spelling; see README 'Config reference')")
            line = _line_of(text, loc)
            where = f" (line {line})" if line else ""
            problems.append((_format_location(loc) + where, message))
        raise ConfigError(ignored_problems + problems) from exc


def _ignored_message(loc: tuple[str | int, ...], home: str | None) -> str:
    """What to say of a key left out as unknown when the config is refused for another problem."""
    if home:
        return f"not a key of this section, ignored: it belongs in [{home}]"
    section = Config.model_fields.get(str(loc[0])) if len(loc) == 2 else None
    names = list(getattr(section.annotation if section else None, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return (f"unknown key, ignored: did you mean {close[0]}?" if close
            else "unknown key, ignored (check spelling; see README 'Config reference')")


_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _range_of(loc: tuple[str | int, ...]) -> str | None:
    """The bounds of a section's key as text ("1 to 65535" read as ">= 1 and <= 65535"), if it has any."""
    if len(loc) != 2:
        return None
    section = Config.model_fields.get(str(loc[0]))
    field = getattr(section.annotation if section else None, "model_fields", {}).get(str(loc[1]))
    bounds = [f"{sign} {getattr(rule, name)}" for rule in (field.metadata if field else ())
              for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
              if getattr(rule, name, None) is not None]
    return " and ".join(bounds) or None


def _belongs_in(loc: tuple[str | int, ...]) -> str | None:
    """The section a key put in the wrong one belongs to ([attention] active_hours: camera), if any.
    Ignored as unknown, camera.active_hours was off, the camera running all day (a review)."""
    if len(loc) != 2:
        return None
    homes = [name for name, section in Config.model_fields.items()
             if name != loc[0] and str(loc[1]) in getattr(section.annotation, "model_fields", {})]
    return homes[0] if len(homes) == 1 else None


def _key_of_check(loc: tuple[str | int, ...], error: Any) -> tuple[str | int, ...]:
    """A section's check between keys names the key it is about first ("backoff_max_s must be >= ..."):
    that key's path and line, not the section's header."""
    if len(loc) != 1 or error["type"] != "value_error":
        return loc
    section = Config.model_fields.get(str(loc[0]))
    first = str(error.get("ctx", {}).get("error", "")).split(" ", 1)[0]
    annotation = section.annotation if section is not None else None
    fields = getattr(annotation, "model_fields", {})
    return (*loc, first) if first in fields else loc


def _remove(data: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    for part in loc[:-1]:
        data = data[str(part)]
    data.pop(str(loc[-1]), None)


MAX_TOKEN_CHARS = 512  # a longer "token" is garbage; refuse it before hashing


def token_fits(token: str) -> bool:
    """What the daemon takes as a web or metrics token: 16 to 512 characters, no white space."""
    return 16 <= len(token) <= MAX_TOKEN_CHARS and not any(c.isspace() for c in token)


def check_secret_file(key: str, path: Path) -> str | None:
    """Why a secret file is unusable, or None: it must exist, be a readable file, and be private."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"secret file {path} does not exist (provisioning creates it)"
    except PermissionError:
        return f"secret file {path} cannot be read by this user"
    except OSError as exc:  # a path through a file, a link loop, a name too long: a traceback before
        return f"secret file {path} cannot be reached: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"secret file {path} is readable by group or others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run: chmod 600 {path}"
        )
    if not os.access(path, os.R_OK):
        return f"secret file {path} cannot be read by this user"
    return None


DAEMON_USER = "edge-agent"  # the units' User= (provisioning creates it)


def unreadable_by_daemon(path: Path, fix: str, user: str = DAEMON_USER) -> str | None:
    """Why the daemon's ``user`` cannot read ``path`` by its and its folders' owners and modes (ACLs
    aside), or None. Asked only as root, where os.access answers for root, who reads anything: config
    check under sudo said OK to a root-owned 0600 secret the daemon then could not read. None too where
    there is no such user (a development machine)."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return None
    groups = {account.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}

    def denied(info: os.stat_result, bits: tuple[int, int, int]) -> bool:
        if info.st_uid == account.pw_uid:
            return not info.st_mode & bits[0]
        return not info.st_mode & (bits[1] if info.st_gid in groups else bits[2])

    def owner(info: os.stat_result) -> str:
        try:
            return pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            return str(info.st_uid)

    try:
        target = path.resolve()
        for folder in reversed(target.parents):
            info = folder.stat()
            if denied(info, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
                return (f"edge-agent runs as user {user}, who cannot enter {folder} (owner {owner(info)}, "
                        f"mode {stat.S_IMODE(info.st_mode):o}) to read {path}")
        info = target.stat()
    except OSError:
        return None  # said by the checks before
    if denied(info, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)):
        return (f"edge-agent runs as user {user}, who cannot read {path} (owner {owner(info)}, mode "
                f"{stat.S_IMODE(info.st_mode):o}); run: {fix}")
    return None


def unreadable_config(path: Path) -> str | None:
    """Why the daemon's user cannot read the config file at ``path`` (asked as root, as config check and
    doctor are), or None. A review: its group set to root, the daemon stopped on Permission denied while
    both said it was valid."""
    return unreadable_by_daemon(path, f"chgrp {DAEMON_USER} {path} && chmod 640 {path}", DAEMON_USER)


MIN_SECRET_BYTES = 32
MIN_DISTINCT_BYTES = 8  # provisioning writes 64 hex digits (16 different bytes); random bytes have ~30
BOM = b"\xef\xbb\xbf"


def read_token_file(path: Path | None, key: str = "web.token_file") -> str | None:
    """The token in the file of config key ``key``; None when unset; ConfigError saying what is wrong."""
    if path is None:
        return None
    problem = check_secret_file(key, path)
    if problem is not None:
        raise ConfigError([(key, problem)])
    try:
        token = path.read_text(encoding="utf-8-sig").strip()  # Notepad's BOM is no part of it
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([(key, f"cannot read {path}: {exc}")]) from exc
    if not token_fits(token):
        raise ConfigError([(key, f"{path} must hold one token of 16 to {MAX_TOKEN_CHARS} "
                                 "characters without spaces (e.g. from: openssl rand -hex 24)")])
    return token


def secret_bytes(path: Path) -> bytes:
    """The pseudonym secret in ``path``: spaces and line ends around it, and an editor's byte-order mark
    (Notepad adds one), are no part of it. OSError when it cannot be read."""
    return path.read_bytes().removeprefix(BOM).strip()


def pseudonym_secret_problem(secret: bytes, path: Path) -> str | None:
    """Why ``secret`` (read from ``path``) cannot be the pseudonym secret, or None."""
    if len(secret) < MIN_SECRET_BYTES:
        return f"{path}: secret must be {MIN_SECRET_BYTES}+ bytes"
    if len(set(secret)) < MIN_DISTINCT_BYTES:
        # 48 NUL bytes (a disk fault, a placeholder) were taken: every student started afresh, and
        # pseudonyms under a known key can be reversed from a list of student ids
        return (f"{path} is not a secret: only {len(set(secret))} different bytes in it. Restore it from the "
                "board's backup; a new one (provisioning writes one) starts every student afresh")
    return None


def check_files(config: Config) -> list[tuple[str, str]]:
    """Problems with the files a config refers to (secrets private, certificates present)."""
    problems = []
    for key, path in config.secret_files():
        reason = check_secret_file(key, path)
        if reason is None and key == "device.pseudonym_secret_file":
            # what the daemon would refuse at start (a review: config check and doctor said OK)
            try:
                reason = pseudonym_secret_problem(secret_bytes(path), path)
            except OSError as exc:
                reason = f"cannot read {path}: {exc}"
        elif reason is None and key in ("web.token_file", "metrics.token_file"):
            try:  # a review: config check and doctor said OK to a token the start refused
                read_token_file(path, key)
            except ConfigError as exc:
                reason = exc.problems[0][1]
        reason = reason or unreadable_by_daemon(path, f"chown {DAEMON_USER} {path}")
        if reason:
            problems.append((key, reason))
    for key, path in config.required_files():
        if not path.is_file():
            problems.append((key, f"file {path} does not exist"))
        elif reason := unreadable_by_daemon(path, f"chmod 644 {path}"):
            problems.append((key, reason))
    problems += _tls_pair_problems(config, {key for key, _ in problems})
    for key, path in _paths_of(config):
        if not path.is_absolute():  # passed where IT checked it (the config's folder), missing under systemd
            problems.append((key, f"{path} is a relative path: the daemon runs from / (its unit's working "
                                  "directory), so give the whole path, e.g. /etc/edge-agent/..."))
    folders = (("paths.state_dir", config.paths.state_dir), ("paths.cache_dir", config.paths.cache_dir))
    for key, folder in folders:
        if reason := _not_a_folder(folder):  # a review: state_dir named the database file; doctor said OK
            problems.append((key, reason))
    if config.camera.enabled and _relative_camera_source(config.camera.source):
        # a review: source = "faces" (a folder where IT stood) passed config check and doctor; the daemon,
        # run from /, found no camera
        shown = without_credentials(config.camera.source)
        problems.append(("camera.source", f"{shown!r} is a relative path: the daemon runs from / (its unit's "
                                          "working directory), so give the whole path of the file or folder, "
                                          "e.g. /srv/edge-agent/faces"))
    return problems


def _tls_pair_problems(config: Config, named: set[str]) -> list[tuple[str, str]]:
    """The HTTPS certificates and keys loaded as the web and metrics listeners load them, for the pairs
    not already found missing or unreadable: a half-done rotation (a new key, the old certificate) passed
    the check before a reload, and the restarted web component failed, tried again only every 300 s."""
    problems = []
    for section, settings in (("web", config.web), ("metrics", config.metrics)):
        cert, key = settings.tls_cert_file, settings.tls_key_file
        keys = {f"{section}.tls_cert_file", f"{section}.tls_key_file"}
        if settings.enabled and cert is not None and key is not None and not keys & named:
            # here: it imports this module, and aiohttp, which a board without HTTPS need not load
            from edge_agent.web.connections import server_tls_context

            try:
                server_tls_context(cert, key, f"{section}.tls_cert_file")
            except ConfigError as exc:
                problems += exc.problems
    return problems


def _not_a_folder(folder: Path) -> str | None:
    """Why the daemon cannot make or use ``folder`` as a folder (it or a folder above it is a file), or None;
    one not made yet is made at start."""
    probe = folder
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.is_dir():
            return None
    except OSError as exc:
        return f"{folder} cannot be reached: {exc.strerror or exc}"
    if probe == folder:
        return f"{folder} is a file, not a folder: name the folder the daemon keeps its files in"
    return f"{folder} cannot be made: {probe} is a file, not a folder"


def _relative_camera_source(source: str) -> bool:
    """Whether a camera source names a file or folder by a relative path: not a V4L2 index, a URL, a
    GStreamer pipeline (a "!" in what is no file here) or an absolute path."""
    text = source.strip()
    if not text or re.fullmatch(r"\d+", text) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return False
    path = Path(text)
    if path.is_absolute():
        return False
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a long pipeline is too long a name for a file
        exists = False
    return exists or "!" not in text


def _paths_of(config: Config) -> list[tuple[str, Path]]:
    """Every file or folder the config names (round 2: a relative kt.roster_file passed, and every answer
    was refused under systemd)."""
    return [(f"{name}.{key}", value) for name in Config.model_fields
            for key, value in getattr(config, name) if isinstance(value, Path)]


def start_problems(path: Path) -> list[tuple[str, str]]:
    """What would stop the daemon from starting on the config at ``path`` now (the files it names
    included), as (key, message); none when it would start. Asked before a reload restarts the daemon."""
    try:
        config, _ = load_config_ignoring_unknown(path)
    except ConfigError as exc:
        return list(exc.problems)
    problems = part_problems(config, in_daemon=True)
    folders = (("paths.state_dir", config.paths.state_dir), ("paths.cache_dir", config.paths.cache_dir))
    for key, folder in folders:
        # Asked from inside the daemon's sandbox, so true of it: a state_dir config check (run as root)
        # passed was read-only under ProtectSystem=strict, and the start after the reload failed (round 2)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".edge-agent-write-check-"):
                pass
        except OSError as exc:
            problems.append((key, f"edge-agent cannot write in {folder}: {exc.strerror or exc}. Under "
                                  "systemd only /var/lib/edge-agent and /var/cache/edge-agent are writable "
                                  "(ProtectSystem=strict); another needs ReadWritePaths= in a drop-in"))
    return problems


def load_config(path: Path, *, check_files_exist: bool = True, this_machine: bool = True) -> Config:
    """Read, validate and (by default) check the files of the config at ``path``, and that the parts the
    daemon starts without (:func:`part_problems`) would run: for ``config check`` and provisioning. Not
    ``this_machine`` (a board's root provisioned on the fleet's workstation): its MQTT files only, not
    where it listens nor its KT package, which are the board's."""
    config = load_config_ignoring_unknown(path, check_files_exist=check_files_exist, ignore_unknown=False)[0]
    if check_files_exist:
        problems = part_problems(config) if this_machine else _mqtt_tls_problems(config)
        if problems:
            raise ConfigError(problems)
    return config


def part_problems(config: Config, *, in_daemon: bool = False) -> list[tuple[str, str]]:
    """Why sync (its TLS files), knowledge tracing (kt.package_dir), the web view or the metrics (where
    they listen) would be down after a start on ``config``, as (key, message). The daemon starts without
    them, so a board that reboots keeps the rest; config check, provisioning and the check before a reload
    refuse them (a review: each passed, and the restart after a reload left that part down). ``in_daemon``:
    asked by the running daemon, which tries the ports itself; config check (often as root) judges them by
    the unit's user instead. Files found missing or unreadable are left to :func:`check_files`."""
    return _mqtt_tls_problems(config) + _kt_package_problems(config) + _listener_problems(config, in_daemon)


def _mqtt_tls_problems(config: Config) -> list[tuple[str, str]]:
    """The MQTT CA file and device certificate and key loaded as sync loads them to connect (its dates
    aside: an expiry is the broker's and provisioning's to say, and must not stop a reload)."""
    mqtt = config.mqtt
    files = (mqtt.ca_file, mqtt.cert_file, mqtt.key_file)
    if not (mqtt.enabled and mqtt.tls) or not all(p.is_file() and os.access(p, os.R_OK) for p in files):
        return []
    try:
        context = ssl.create_default_context(cafile=str(mqtt.ca_file))
    except (OSError, ssl.SSLError) as exc:
        return [("mqtt.ca_file", f"CA file {mqtt.ca_file} cannot be loaded: {exc}; install the broker's CA "
                                 "certificate (PEM) there")]
    try:
        # no passphrase prompt on the terminal for an encrypted key: the daemon could not answer one either
        context.load_cert_chain(str(mqtt.cert_file), str(mqtt.key_file), password=lambda: b"")
    except (OSError, ssl.SSLError) as exc:
        return [("mqtt.cert_file", f"device certificate {mqtt.cert_file} and key {mqtt.key_file} cannot be "
                                   f"used together: {exc}; install the certificate issued for this key (a "
                                   "half-done rotation?) or put the old key back")]
    return []


def _kt_package_problems(config: Config) -> list[tuple[str, str]]:
    """The KT package named by kt.package_dir read as the daemon reads it at start: a mistyped one left
    every answer refused, the log blaming the install (a review)."""
    folder = config.kt.package_dir
    if not config.kt.enabled or folder is None or not folder.is_absolute():  # relative: said by check_files
        return []
    # here: the KT package module is no part of reading a config
    from edge_agent.errors import ModelError
    from edge_agent.kt.package import load_package

    try:
        load_package(folder)
    except ModelError as exc:
        return [("kt.package_dir", str(exc))]
    return []


def _listener_problems(config: Config, in_daemon: bool) -> list[tuple[str, str]]:
    """Whether the web and metrics listeners could listen where the config says: on an address this board
    has, and, in the daemon, on a port free to it; elsewhere on a port the daemon's user may take."""
    problems = []
    for section, settings in (("web", config.web), ("metrics", config.metrics)):
        if not settings.enabled:
            continue
        if in_daemon:
            problem = _bind_problem(section, settings.host, settings.port)
        else:  # port 0: the address alone; the port may be the running daemon's
            problem = _bind_problem(section, settings.host, 0, shown_port=settings.port)
            problem = problem or _privileged_port_problem(section, settings.port)
        if problem is not None:
            problems.append(problem)
    return problems


def _bind_problem(
    section: str, host: str, port: int, *, shown_port: int | None = None
) -> tuple[str, str] | None:
    """Why a listener of ``section`` could not listen on ``host``:``port`` (bound, then closed at once, as
    asyncio's create_server binds), or None. A port this process listens on already is free to it: the
    daemon's own listener, which the restart closes first."""
    # here: it imports aiohttp, which config check need not load for a board without a listener
    from edge_agent.web.connections import listen_failure

    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        unmade: list[OSError] = []  # a socket of none of the name's addresses: that is the problem
        made = False
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            try:
                probe = socket.socket(family, kind, proto)
            except OSError as exc:  # as create_server: a family the kernel lacks is skipped (IPv6 off at
                unmade.append(exc)  # boot, while /etc/hosts still names ::1 localhost: a regression review)
                continue
            made = True
            with probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:  # as create_server: "::" then leaves IPv4 to others
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
        if unmade and not made:
            raise unmade[0]
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and _listening_here(port):
            return None
        return listen_failure(section, host, port if shown_port is None else shown_port, exc)
    return None


def _listening_here(port: int) -> bool:
    """Whether this process holds a TCP socket listening on ``port`` (Linux's /proc; False elsewhere)."""
    mine = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed since (the listing's own, another thread's)
                mine.add(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            listening = len(fields) > 9 and fields[3] == "0A"  # TCP_LISTEN
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port and f"socket:[{fields[9]}]" in mine:
                return True
    return False


UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


def _privileged_port_problem(section: str, port: int) -> tuple[str, str] | None:
    """A port the daemon (its unit's User=edge-agent, no capabilities) may not listen on, whoever asks:
    config check as root took web.port = 80, and the daemon never served there (a review)."""
    try:
        first = int(UNPRIVILEGED_PORT_START.read_text(encoding="ascii"))
    except (OSError, ValueError):
        first = 1024  # Linux's default
    if port >= first:
        return None
    default = 8080 if section == "web" else 9108
    return (f"{section}.port", f"port {port} is below {first} (net.ipv4.ip_unprivileged_port_start): "
                               f"edge-agent runs as user {DAEMON_USER} without capabilities (its unit) "
                               f"and cannot listen on it; use {first} or more (default {default})")


def ignored_key_line(key: str, unknown: str = "is not a key this release knows; ignored") -> str:
    """What to say of a key the config reader left out (``key`` as it names it, with its line):
    ``unknown`` after it, or, for a key of another section, where it belongs ("not a key this release
    knows" was untrue of it: round 2)."""
    section, _, name = key.split(" ", 1)[0].partition(".")
    home = _belongs_in((section, name))
    return f"{key}: not a key of [{section}], so ignored; move it to [{home}]" if home else f"{key} {unknown}"


def load_config_for_command(path: Path) -> Config:
    """The config as the daemon reads it, for the commands IT runs beside it (engines, web clients, kt
    roster, attention): a key only a newer release knows is named on stderr and ignored. They refused it
    as a typo ("check spelling") after a rollback, where the daemon ran; ``config check`` stays strict."""
    config, ignored = load_config_ignoring_unknown(path, check_files_exist=False)
    for key in ignored:
        print(f"config {path}: {ignored_key_line(key)}", file=sys.stderr)
    return config


def load_config_ignoring_unknown(
    path: Path, *, check_files_exist: bool = True, ignore_unknown: bool = True
) -> tuple[Config, list[str]]:
    """As :func:`load_config`, leaving out (and naming) keys this release does not know.

    For the daemon: after a rollback the config may hold a key that only the newer release knows, and
    refusing to start would leave the board down until someone edits it. ``config check`` and
    provisioning stay strict, so a typo is still caught where the config is written."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # saved by Notepad: TOML would refuse its BOM
    except FileNotFoundError as exc:
        raise ConfigError(
            [(str(path), "config file not found (use --config or $EDGE_AGENT_CONFIG)")]
        ) from exc
    except UnicodeDecodeError as exc:  # Notepad's "ANSI" on a Chinese Windows is GBK (a review)
        raise ConfigError([(str(path), f"cannot read config file: it is not UTF-8 text ({exc}); save it as "
                                       "UTF-8 (Notepad: Save As, Encoding UTF-8)")]) from exc
    except (PermissionError, IsADirectoryError) as exc:
        raise ConfigError([(str(path), f"cannot read config file: {exc}")]) from exc
    except OSError as exc:  # a link loop, a name too long, a path through a file: a traceback before
        raise ConfigError([(str(path), f"cannot read config file: {exc.strerror or exc}")]) from exc
    config, ignored = read_config(text, source=str(path), ignore_unknown=ignore_unknown)
    if check_files_exist:
        problems = check_files(config)
        if problems:
            raise ConfigError(problems)
    return config, ignored


_SECRET_KEYS = re.compile(r"(secret|token|key_file|password)", re.IGNORECASE)


# The user and password of a URL: everything between "//" and the LAST "@" before the path, as FFmpeg
# splits it, so a raw "@" in a password (rtsp://admin:p@ss@host) is hidden whole. A raw "/", "?" or "#" in
# the password (rtsp://admin:pa/ss@host: FFmpeg then fails to connect, but the source still holds it) is
# hidden too: "user:" then anything up to the last "@" that a host name follows, tried first (so that
# admin:p@ss/w0rd@host shows no "ss/w0rd"). "host:port/path?x=a@b" is no user and password (round 2: a
# camera without any was shown as "//***@b", its address gone): a password that reads as a port is left.
# A space in the password (FFmpeg cannot use it unescaped, and said so with the password in the message:
# a review) is hidden too, in a run with no "/" that stops at another URL or a pipeline's " ! " (round 2:
# "http://[fe80::1]/video failed; see admin@school.edu" lost the address: no "[" in a user either)
# Inside a pipeline or a message a quote ends the URL (location="rtsp://..."), so ends the password too; a
# source that is a URL alone (no pipeline's " ! ") has no quote around it, and a password holding one
# (Tom's2024, pa"ss1) was shown in clear (a review): _URL_SOURCE_CREDENTIALS reads it up to its last "@".
def _userinfo_pattern(ends: str) -> str:
    """The user and password after "//", ``ends`` (quote characters) ending them as a space does."""
    stop = rf"[/?#\s{ends}]"
    return (rf"//(?:[^/?#:@\s{ends}\[\]]*:(?!\d+(?:{stop}|$))"
            rf"(?:[^\s{ends}]*|(?:(?!://|\s!\s)[^/\n{ends}])*)@"
            rf"(?=(?:[\w.-]+|\[[\w:.%]+\])(?::\d+)?(?:{stop}|$))|[^/?#\s{ends}]*@)")


_URL_CREDENTIALS = re.compile(_userinfo_pattern("\"'"))
_URL_SOURCE_CREDENTIALS = re.compile(r"^(\s*[a-z][\w+.-]*:)" + _userinfo_pattern(""), re.IGNORECASE)
# rtspsrc's and souphttpsrc's proxy= takes "[http://][user:passwd@]host[:port]": the user and password need
# no scheme before them (proxy=puser:pw@proxy:3128), which _URL_CREDENTIALS does not see.
_PROXY_CREDENTIALS = re.compile(
    r"(?<![\w.-])(proxy\s*=\s*[\"']?(?:[a-z][\w+.-]*://)?)[^\s\"']*@", re.IGNORECASE
)
# An XMEye URL's password sits in the path (rtsp://host/user=admin&password=se&cret&channel=1&stream=0.sdp)
# and the camera takes it raw, '&' included: it runs to the next parameter the camera knows, or the end.
_XMEYE_PASSWORD = re.compile(
    r"(://[^/\s\"']*/[^?\s\"']*?(?<=[/&_])(?:password|passwd|pwd|pass)=)(.*?)"
    r"(?=[&_](?:channel|stream|user|username)=|[\s\"']|$)",
    re.IGNORECASE,
)
# name=value credentials: in a URL (?user=admin&pwd=X, Hikvision's ?auth=<base64 user:password>, Foscam's
# loginuse/loginpas, FFmpeg's srt/rist passphrase/secret and srtp_*_params keys) and as a GStreamer
# property (rtspsrc and souphttpsrc user-id, user-pw, proxy-id, proxy-pw; srtsrc passphrase). A name may end
# in one (access_token, stream-key, api_key), but no longer name that merely starts with one is taken
# (key-int-max=30 stays).
_NAMED_CREDENTIALS = re.compile(
    r"(?<![\w.-])((?:[\w-]*[_-])?(?:password|passwd|pass|pwd|pw|token|key|secret|auth|credentials?)"
    r"|user-id|user-pw|proxy-id|proxy-pw|username|user|usr|loginuse|loginpas|passphrase"
    r"|srtp_in_params|srtp_out_params)(\s*=\s*)"
    # a bare value ends where an XMEye '_' parameter begins (user=admin_password=X_channel=1)
    r"(\"[^\"]*\"|'[^']*'|(?:(?!_(?:password|passwd|pwd|pass|channel|stream)=)[^&;\s\"'])+)",
    re.IGNORECASE,
)

# An HTTP header a source sends (souphttpsrc extra-headers="h, Authorization=(string)\"Basic ...\"", or
# "Authorization: Bearer ..."): its value, scheme and all, with or without (escaped) quotes; unquoted, any
# scheme word (Token, ApiKey: round 2) and every "; "-joined cookie. Digest's comma-separated, quoted
# parameters (username="admin", response=...) are hidden to the end of the line, the rest of a pipeline
# with them: they nest quotes no pattern can follow.
_HEADER_CREDENTIALS = re.compile(
    r"(?<![\w-])((?:proxy-)?authorization|cookie)(\s*[=:]\s*(?:\(string\)\s*)?)"
    r"((?:\\?\")?digest\s.*|\\?\"(?:[^\"\\]|\\[^\"])*\\?\"|(?:[a-z][\w.-]*\s+(?=[^\s,;\"'\\]))?[^\s,;\"'\\]+"
    r"(?:;\s*[^\s,;\"'\\]+)*)",
    re.IGNORECASE,
)


def without_credentials(text: str) -> str:
    """``text`` with every user name, password and token a camera source may hold hidden: the userinfo of
    any URL or proxy in it and the value of any user/password/token/key parameter or pipeline property. The
    one masking used wherever a source is shown (status, logs, doctor, support bundle, config show)."""
    if not re.search(r"\s!\s", text):
        text = _URL_SOURCE_CREDENTIALS.sub(r"\1//***@", text, count=1)
    text = _URL_CREDENTIALS.sub("//***@", text)
    text = _PROXY_CREDENTIALS.sub(lambda m: f"{m.group(1)}***@", text)
    text = _XMEYE_PASSWORD.sub(lambda m: f"{m.group(1)}***", text)
    text = _HEADER_CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _NAMED_CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def masked_dump(config: Config) -> dict[str, Any]:
    """The effective config as plain data, secret file paths shown but marked, secret values never read,
    and no password of a URL (camera.source) shown."""
    data = config.model_dump(mode="json")
    for section in data.values():
        if isinstance(section, dict):
            for key, value in section.items():
                if _SECRET_KEYS.search(key) and value is not None:
                    section[key] = f"{value} (secret, contents not shown)"
                elif isinstance(value, str):
                    section[key] = without_credentials(value)
                elif isinstance(value, list):
                    section[key] = [without_credentials(v) if isinstance(v, str) else v for v in value]
    return data


def to_toml(data: dict[str, Any]) -> str:
    """Render a two-level dict (sections of scalars and lists of them) as TOML, for `config show` and
    provisioning."""
    out: list[str] = []
    for section, values in data.items():
        out.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                out.append(f"# {key} is unset")
                continue
            out.append(f"{key} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
