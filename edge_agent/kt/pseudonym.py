"""Student pseudonyms: HMAC-SHA256 of the student id under the device secret; the raw id is never kept."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from edge_agent.config import check_secret_file
from edge_agent.errors import ConfigError

MIN_SECRET_BYTES = 32


class Pseudonymizer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError([("device.pseudonym_secret_file", f"secret must be {MIN_SECRET_BYTES}+ bytes")])
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path, *, check_mode: bool = True) -> Pseudonymizer:
        if check_mode:
            problem = check_secret_file("device.pseudonym_secret_file", path)
            if problem:
                raise ConfigError([("device.pseudonym_secret_file", problem)])
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError([("device.pseudonym_secret_file", f"cannot read {path}: {exc}")]) from exc
        return cls(secret)

    def __call__(self, student_id: str) -> str:
        """32 hex characters (128 bits): short enough for URLs, far from colliding in one school."""
        return hmac.new(self._secret, student_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
