"""Student pseudonyms: HMAC-SHA256 of the student id under the device secret; the raw id is never kept."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from edge_agent.config import check_secret_file
from edge_agent.errors import ConfigError

MIN_SECRET_BYTES = 32
MIN_DISTINCT_BYTES = 8  # provisioning writes 64 hex digits (16 different bytes); random bytes have ~30
BOM = b"\xef\xbb\xbf"


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
            secret = path.read_bytes()
        except OSError as exc:
            raise ConfigError([("device.pseudonym_secret_file", f"cannot read {path}: {exc}")]) from exc
        # An editor's byte-order mark (Notepad adds one) is not part of the secret: kept, it made every
        # student a new one after the file was opened and saved
        secret = secret.removeprefix(BOM).strip()
        if len(secret) >= MIN_SECRET_BYTES and len(set(secret)) < MIN_DISTINCT_BYTES:
            # 48 NUL bytes (a disk fault, a placeholder) were taken: every student started afresh, and
            # pseudonyms under a known key can be reversed from a list of student ids
            raise ConfigError([(
                "device.pseudonym_secret_file",
                f"{path} is not a secret: only {len(set(secret))} different bytes in it. Restore it from the "
                "board's backup; a new one (provisioning writes one) starts every student afresh",
            )])
        return cls(secret)

    @property
    def fingerprint(self) -> str:
        """Names the secret without giving it away: stored beside the students' states, it tells a changed
        secret (every stored student unreachable) from a board whose students are simply new."""
        mac = hmac.new(self._secret, b"edge-agent pseudonym secret fingerprint", hashlib.sha256)
        return mac.hexdigest()[:16]

    def __call__(self, student_id: str) -> str:
        """32 hex characters (128 bits): short enough for URLs, far from colliding in one school."""
        return hmac.new(self._secret, student_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
