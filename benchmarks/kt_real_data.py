"""The trainer on real data: DKT's ASSISTments 2009 skill-builder split, held-out AUC (target ~0.85).

Only package registries are reachable from our build machines, and the one copy of this data found there
is inside the PyPI source archive of pyBKT 1.4.1 (MIT), which by accident ships its git directory. Two blobs
in it are DKT's ``builder_train.csv`` / ``builder_test.csv`` (chrispiech/DeepKnowledgeTracing) converted to
rows of ``count,skill,correct``, where the first column repeats each student's answer count. This script
downloads the archive (sha256 pinned), reads the two blobs with ``git cat-file``, turns them back into the
3-lines-per-student format, checks their sha256 (equal in size to DKT's files; see the README), and trains
with ``edge-agent kt train``'s defaults. Nothing from the data is committed; the cache sits in artifacts/.

    .venv/bin/python benchmarks/kt_real_data.py [--cache artifacts/kt-real-data] [--epochs 10]

The data's terms: the ASSISTments project asks users to cite Feng, Heffernan & Koedinger (2009).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge_agent.inference.fetch import download_verified, sha256_file  # noqa: E402

ARCHIVE_URL = (
    "https://files.pythonhosted.org/packages/b9/87/4aca9e46814a2e00b31f045930e8bf0bcd598e58edff5976b1b990f66d72/"
    "pyBKT-1.4.1.tar.gz"
)
ARCHIVE_SHA256 = "301e34171abbc4dfc63eb14e1b2c18f5849808d95d9bc4741a17c9fc9d7bd0f9"
GIT_DIR = "pyBKT-1.4.1/.git"
# git blob -> (file written, sha256 of the rebuilt 3-line file)
SPLITS = {
    "train": (
        "5065ee57f674e463b7d1b1b0c549a1eea638d5b3",
        "bfae3e91ff4f0eb59bb12862872cbddcacd19bccad472c60ef0bdf7d7eb963d1",
    ),
    "test": (
        "fd034578a8a9cd0e816418f09b278edeff76042a",
        "b50d81ef734e1e159ccf7976ffa5000674635c145eda4f78ba4cacaf374a61c0",
    ),
}


class DataMismatch(RuntimeError):
    """The download or a rebuilt file is not what this script was written for."""


def rows_to_dkt(text: str) -> str:
    """``count,skill,correct`` rows (a header first; ``count`` = that student's answers) -> DKT 3-line text.

    A student's answers are the next ``count`` rows; a run that is cut short or changes count is refused.
    """
    rows = [line.split(",") for line in text.splitlines()[1:] if line.strip()]
    out, i = [], 0
    while i < len(rows):
        try:
            count = int(rows[i][0])
        except (ValueError, IndexError) as exc:
            raise DataMismatch(f"row {i + 2}: the first column must be the answer count") from exc
        chunk = rows[i : i + count]
        if count < 1 or len(chunk) != count or any(len(r) != 3 or r[0] != rows[i][0] for r in chunk):
            raise DataMismatch(f"rows {i + 2}-{i + 1 + count}: not {count} rows of one student")
        out += [str(count), ",".join(r[1] for r in chunk) + ",", ",".join(r[2] for r in chunk) + ","]
        i += count
    return "\n".join(out) + "\n"


def fetch(cache: Path) -> dict[str, Path]:
    """The two DKT files under ``cache``, downloaded and rebuilt once."""
    cache.mkdir(parents=True, exist_ok=True)
    files = {split: cache / f"builder_{split}.csv" for split in SPLITS}
    if all(p.is_file() and sha256_file(p) == SPLITS[s][1] for s, p in files.items()):
        return files
    archive = cache / "pyBKT-1.4.1.tar.gz"
    if not (archive.is_file() and sha256_file(archive) == ARCHIVE_SHA256):
        print(f"downloading {ARCHIVE_URL}", flush=True)
        download_verified(ARCHIVE_URL, archive, ARCHIVE_SHA256, timeout_s=120)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(GIT_DIR + "/")]
        members = [m for m in members if m.isfile() or m.isdir()]  # regular files of one folder only
        tar.extractall(cache, members=members)
    for split, path in files.items():
        blob, want = SPLITS[split]
        rows = subprocess.run(
            ["git", "--git-dir", str(cache / GIT_DIR), "cat-file", "-p", blob],
            check=True,
            capture_output=True,
            timeout=120,
        ).stdout.decode("ascii")
        path.write_text(rows_to_dkt(rows), encoding="ascii")
        got = sha256_file(path)
        if got != want:
            raise DataMismatch(f"{path}: sha256 {got}, expected {want}")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=REPO / "artifacts" / "kt-real-data")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=96)
    args = parser.parse_args(argv)
    from edge_agent.kt.build import build_from_sequences
    from edge_agent.kt.data import read_sequences
    from edge_agent.kt.train import TrainOptions

    files = fetch(args.cache)
    train, test = read_sequences(files["train"], "dkt-csv"), read_sequences(files["test"], "dkt-csv")
    started = time.monotonic()
    opts = TrainOptions(hidden=args.hidden, embed=64, epochs=args.epochs)  # `edge-agent kt train` defaults
    result = build_from_sequences(train, test, args.cache / "package", opts)
    result.update(
        data="ASSISTments 2009 skill builder, DKT split (via pyBKT 1.4.1 sdist)",
        train_sha256=SPLITS["train"][1],  # fetch() checked both files against these
        test_sha256=SPLITS["test"][1],
        train_seconds=round(time.monotonic() - started, 1),
        hidden=args.hidden,
        epochs=args.epochs,
    )
    (args.cache / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
