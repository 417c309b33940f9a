"""The project's exception hierarchy.

Every error a school's IT person may see derives from :class:`EdgeAgentError` and carries a message
that says what is wrong and what to do. Third-party exceptions are translated at the boundary that
imports the library (``raise ModelError(...) from exc``), never leaked upward.

    EdgeAgentError
    ├── ConfigError            a config file or secret file is invalid (config check lists them all)
    ├── StoreError             the SQLite store cannot be opened or written
    │   ├── StoreCorruptError  the database failed its integrity check (moved aside at start-up)
    │   ├── StoreFullError     the disk or the configured limits refuse a write
    │   └── StoreUnwritableError  the storage refuses writes: read-only after disk errors, I/O errors
    ├── ModelError             a model file is missing, has the wrong hash, or cannot be fetched
    ├── EngineError            an inference engine cannot be built, loaded or run
    │   ├── EngineLoadError    building or deserializing failed (the daemon falls back to ONNX Runtime)
    │   └── EngineInputError   an input has the wrong name, dtype or a shape outside the profile
    ├── CameraError            a camera source cannot be opened or stopped delivering frames
    ├── SyncError              MQTT connection, TLS or publish failures
    ├── InputRejected          an API request or command message is malformed (maps to HTTP 4xx)
    ├── CommandRefused         a well-formed command the board will not carry out (it says why)
    └── ProvisioningError      provisioning, certificates or signed model packages failed
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base class of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """A config problem; ``problems`` lists each as ``(key path, message)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


class StoreError(EdgeAgentError):
    pass


class StoreCorruptError(StoreError):
    pass


class StoreFullError(StoreError):
    pass


class StoreUnwritableError(StoreError):
    pass


class StoreLockedError(StoreError):
    """Another program holds the database's write lock past the busy timeout: a write may succeed later."""


class ModelError(EdgeAgentError):
    pass


class EngineError(EdgeAgentError):
    pass


# EngineLoadError.reason when TensorRT or CUDA is not there at all: the expected case on machines without
# a GPU, where falling back to ONNX Runtime is no failure (inference/select.py).
TENSORRT_UNAVAILABLE = "tensorrt_unavailable"


class EngineLoadError(EngineError):
    """Building or loading an engine failed; ``reason`` is a short label used as a metric label."""

    def __init__(self, message: str, reason: str = "load_failed") -> None:
        self.reason = reason
        super().__init__(message)


class EngineInputError(EngineError):
    pass


class CameraError(EdgeAgentError):
    pass


class SyncError(EdgeAgentError):
    pass


class InputRejected(EdgeAgentError):
    """Malformed input from outside; ``field`` names what was wrong where known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class CommandRefused(EdgeAgentError):
    """Raised by a command handler: the heartbeat reports the command refused, with this message."""


class ProvisioningError(EdgeAgentError):
    pass
