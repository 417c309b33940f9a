"""Student pseudonyms: HMAC-SHA256 of the student id under the device secret; the raw id is never kept."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from edge_agent.config import (
    BOM,
    MIN_SECRET_BYTES,
    check_secret_file,
    pseudonym_secret_problem,
    secret_bytes,
)
from edge_agent.errors import ConfigError

KEY = "device.pseudonym_secret_file"


class Pseudonymizer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError([(KEY, f"secret must be {MIN_SECRET_BYTES}+ bytes")])
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path, *, check_mode: bool = True) -> Pseudonymizer:
        if check_mode:
            problem = check_secret_file(KEY, path)
            if problem:
                raise ConfigError([(KEY, problem)])
        try:
            secret = secret_bytes(path)
        except OSError as exc:
            raise ConfigError([(KEY, f"cannot read {path}: {exc}")]) from exc
        problem = pseudonym_secret_problem(secret, path)
        if problem:
            raise ConfigError([(KEY, problem)])
        return cls(secret)

    @classmethod
    def as_read_before(cls, path: Path) -> Pseudonymizer | None:
        """The secret as releases before 2026-12-03 read a file saved with a byte-order mark (the mark
        kept in it); None for a file without one. Their students were made under it."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        return cls(raw.strip()) if raw.startswith(BOM) and len(raw.strip()) >= MIN_SECRET_BYTES else None

    def with_mark(self) -> Pseudonymizer:
        """This secret as releases before 2026-12-03 read it from a file saved with a byte-order mark."""
        return Pseudonymizer(BOM + self._secret)

    @property
    def fingerprint(self) -> str:
        """Names the secret without giving it away: stored beside the students' states, it tells a changed
        secret (every stored student unreachable) from a board whose students are simply new."""
        mac = hmac.new(self._secret, b"edge-agent pseudonym secret fingerprint", hashlib.sha256)
        return mac.hexdigest()[:16]

    def __call__(self, student_id: str) -> str:
        """32 hex characters (128 bits): short enough for URLs, far from colliding in one school."""
        return hmac.new(self._secret, student_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
