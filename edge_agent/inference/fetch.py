"""Obtain a manifest's ONNX file: the verified cache, then the local mirror, then the official URL.

Every candidate is checked against the manifest's sha256 before it replaces anything, and written
atomically (temporary file in the same folder, fsync, ``os.replace``), so a wrong or half-downloaded file
never displaces the previous good one. Files live in ``cache_dir/models/<mirror_path>``.

Engines are made from :func:`engine_model`: the verified file itself, or, where the manifest sets
``source.dynamic_batch``, ``fold_input_depthwise`` or ``merge_sibling_convs``, a copy derived from exactly
the pinned bytes and kept beside it (``<stem>.derived.onnx``).
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import io
import logging
import os
import stat
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO

from edge_agent.config import PathSettings
from edge_agent.errors import ModelError
from edge_agent.inference.batch_dim import make_batch_dynamic
from edge_agent.inference.conv_fold import fold_input_depthwise_convs, merge_sibling_separable_convs
from edge_agent.inference.manifest import Manifest

log = logging.getLogger(__name__)

MIRROR_ENV = "EDGE_AGENT_MODEL_MIRROR"
MAX_MODEL_BYTES = 512 * 1024 * 1024
_CHUNK = 1 << 16
# A whole download may take this many network waits (timeout_s each): 5 minutes at the default 30 s, in
# which the largest shipped model (1.2 MB) needs 4 kB/s. Each wait alone let a server trickling a byte at
# a time hold a fetch, and the boot's engine build after it, for ever.
DOWNLOAD_WAITS = 10
# A .part file unchanged this long was left by a writer that died (SIGKILL, a power cut): a live one is
# written at least once a network wait (--timeout, 30 s by default) and is kept.
STALE_PART_S = 600.0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mirror_dir(paths: PathSettings) -> Path | None:
    """$EDGE_AGENT_MODEL_MIRROR wins over ``paths.model_mirror`` so a technician can point at a USB stick."""
    env = os.environ.get(MIRROR_ENV)
    if env:
        return Path(env)
    return paths.model_mirror


def cached_model_path(manifest: Manifest, paths: PathSettings) -> Path:
    return paths.cache_dir / "models" / manifest.source.mirror_path


def folder_owner(folder: Path) -> tuple[int, int] | None:
    """Run as root, the (uid, gid) of the account that ``folder`` (or its nearest existing parent) belongs
    to, where that is not root: what root writes into the daemon's cache is given to the daemon's account.
    `sudo edge-agent doctor` (the README's board steps run it as root) fetched the models into
    /var/cache/edge-agent as root:root 0600, in folders root owned, and the daemon (edge-agent, whose
    folder systemd makes it) could then neither read them nor write beside them. None otherwise."""
    if os.geteuid() != 0:
        return None
    for candidate in (folder, *folder.parents):
        try:
            info = candidate.stat()
        except FileNotFoundError:
            continue
        return None if info.st_uid == 0 else (info.st_uid, info.st_gid)
    return None


def make_folder(folder: Path, owner: tuple[int, int] | None) -> None:
    """``mkdir -p folder``, the folders it makes given to ``owner`` (from :func:`folder_owner`)."""
    missing = [f for f in (folder, *folder.parents) if not f.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        for made in reversed(missing):
            os.chown(made, *owner, follow_symlinks=False)


def give_file(path: Path, owner: tuple[int, int]) -> None:
    """Give the file at ``path``, which root just wrote by name in the owner's folder, to ``owner``:
    through a descriptor opened without following a link, and only a plain file with one name. The folder
    is the daemon's account's, which could put a link to, or a second name of, a file of root's there."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise ModelError(f"{path} is not the file just written (a link or another name): not given to "
                             f"uid {owner[0]}; remove it and run the command again")
        os.fchown(fd, *owner)
    finally:
        os.close(fd)


def open_log(path: Path) -> TextIO:
    """``path`` opened to append; run as root, a log it makes is given to the folder's owner (the daemon
    appends to it later). Never through a link: root appending to, or giving away, a file the daemon's
    account linked there would hand it that file."""
    owner = folder_owner(path.parent)
    make_folder(path.parent, owner)
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        if owner is not None:
            os.fchown(fd, *owner)
    except FileExistsError:
        fd = os.open(path, flags)
    return os.fdopen(fd, "a", encoding="utf-8")


def remove_stale_parts(folder: Path, names: str) -> None:
    """Delete the temporary files :func:`atomic_writer` made in ``folder`` for files named like ``names``
    (a glob) that a killed writer left: it removes its own only on an exception, and after a SIGKILL or a
    power cut each kept up to a model's or a plan's size for ever. Only those unchanged for
    :data:`STALE_PART_S`, so a concurrent writer's file is kept."""
    now = time.time()
    try:
        parts = list(folder.glob(f".{names}.*.part"))
    except OSError:  # a folder this account cannot list: the write that follows says what is wrong
        return
    for part in parts:
        try:
            if now - part.lstat().st_mtime > STALE_PART_S:
                part.unlink()
                log.info("deleted %s, left by a write that was cut short", part)
        except OSError:  # gone meanwhile, another account's: nothing worse than the space it takes
            continue


@contextmanager
def atomic_writer(dest: Path) -> Iterator[BinaryIO]:
    """A file handle whose content replaces ``dest`` only if the block finishes without an exception;
    run as root, the file (and any folder made for it) belongs to the owner of the folder it is in."""
    owner = folder_owner(dest.parent)
    make_folder(dest.parent, owner)
    remove_stale_parts(dest.parent, glob.escape(dest.name))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    if owner is not None:
        os.fchown(fd, *owner)  # the descriptor, not the name: nothing can swap the file under it
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class CacheUnwritable(ModelError):
    """The model cache could not be written (a full disk, another account's folder)."""


def _read(stream: io.BufferedIOBase, origin: str) -> bytes:
    try:
        # read1: what one recv gives; read() waited for a whole chunk, a byte per wait from a slow server
        return stream.read1(_CHUNK)
    except OSError as exc:  # a reset download, an unreadable mirror file: not the cache's fault
        raise ModelError(f"reading {origin} failed: {exc.strerror or exc}") from exc


def _verified_copy(
    stream: io.BufferedIOBase, dest: Path, want_sha: str, origin: str, *, limit_s: float | None = None
) -> None:
    """Copy ``stream`` into ``dest`` if its sha256 is ``want_sha``, within ``limit_s`` seconds if given."""
    digest = hashlib.sha256()
    size = 0
    start = time.monotonic()
    try:
        with atomic_writer(dest) as out:
            while chunk := _read(stream, origin):
                size += len(chunk)
                if size > MAX_MODEL_BYTES:
                    raise ModelError(f"{origin} is larger than {MAX_MODEL_BYTES} bytes; refused")
                took = time.monotonic() - start
                if limit_s is not None and took > limit_s:
                    raise ModelError(f"download too slow: {size} bytes in {took:.0f} s from {origin} (at "
                                     f"most {limit_s:.0f} s, {DOWNLOAD_WAITS} times the network timeout)")
                digest.update(chunk)
                out.write(chunk)
            got = digest.hexdigest()
            if got != want_sha:
                raise ModelError(
                    f"{origin} has sha256 {got}, the manifest pins {want_sha}; refused, previous file kept"
                )
    except OSError as exc:  # the reads raise ModelError: this is the cache (a review: a read-only cache was
        raise CacheUnwritable(f"cannot write {dest}: {exc.strerror or exc}") from exc  # "copy into a mirror")


def _from_mirror(manifest: Manifest, mirror: Path, dest: Path, sha: str) -> None:
    candidate = mirror / manifest.source.mirror_path
    try:
        if not candidate.is_file():
            raise ModelError(f"mirror has no {candidate}")
        stream = candidate.open("rb")
    except OSError as exc:  # a review: a mirror file of another account was "cannot write" the cache
        raise ModelError(f"mirror file {candidate} cannot be read: {exc.strerror or exc}; give the daemon's "
                         "user read access to the mirror") from exc
    with stream:
        _verified_copy(stream, dest, sha, f"mirror file {candidate}")


def download_verified(url: str, dest: Path, sha: str, timeout_s: float) -> None:
    """Stream ``url`` into ``dest`` atomically, only if its sha256 is ``sha``; ModelError otherwise."""
    request = urllib.request.Request(url, headers={"User-Agent": "edge-agent model fetch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            _verified_copy(response, dest, sha, url, limit_s=DOWNLOAD_WAITS * timeout_s)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts; a garbled or cut-short reply
        raise ModelError(f"download of {url} failed: {exc}") from exc


def fetch_model(manifest: Manifest, paths: PathSettings, *, timeout_s: float = 30.0) -> Path:
    """The verified local ONNX file of ``manifest``, fetching it if needed; :class:`ModelError` otherwise."""
    source = manifest.source
    if source.repo_path is not None:
        return _repo_file(manifest)
    assert source.sha256 is not None and source.url is not None  # guaranteed by the manifest parser
    dest = cached_model_path(manifest, paths)
    # here as well as in atomic_writer: once the model is in the cache, nothing is written beside it
    remove_stale_parts(dest.parent, glob.escape(dest.name))
    try:
        if dest.is_file() and sha256_file(dest) == source.sha256:
            return dest
    except OSError:  # unreadable to this account (a review: a PermissionError traceback): fetched again
        log.warning("the cached model %s cannot be read; fetching it again", dest)
    problems: list[str] = []
    mirror = mirror_dir(paths)
    attempts = (
        [("mirror", lambda: _from_mirror(manifest, mirror, dest, source.sha256 or ""))] if mirror else []
    )
    attempts.append(
        ("url", lambda: download_verified(source.url or "", dest, source.sha256 or "", timeout_s))
    )
    unwritable = False
    for origin, attempt in attempts:
        try:
            attempt()
        except ModelError as exc:
            unwritable = unwritable or isinstance(exc, CacheUnwritable)
            log.warning("model %s not taken from %s: %s", manifest.name, origin, exc)
            problems.append(str(exc))
            continue
        log.info("model %s fetched from %s into %s", manifest.name, origin, dest)
        return dest
    kept = " (the previous file in the cache was kept)" if dest.exists() else ""
    # the cache could not be written: copying the model into a mirror (already there, a review) is no fix
    fix = (f"Free space on (or give write access to) {dest.parent}." if unwritable else
           f"Copy {source.mirror_path} into a mirror folder and set ${MIRROR_ENV} or paths.model_mirror.")
    raise ModelError(f"model {manifest.name} could not be obtained{kept}: {'; '.join(problems)}. {fix}")


def _repo_file(manifest: Manifest) -> Path:
    path = manifest.source.repo_path
    assert path is not None
    if not path.is_file():
        raise ModelError(
            f"model {manifest.name}: {path} is missing; reinstall edge-agent or its model package"
        )
    if manifest.source.sha256 and sha256_file(path) != manifest.source.sha256:
        raise ModelError(f"model {manifest.name}: {path} does not match the sha256 in {manifest.path}")
    return path


def derived_model_path(manifest: Manifest, paths: PathSettings) -> Path:
    cached = cached_model_path(manifest, paths)
    return cached.with_name(f"{cached.stem}.derived.onnx")


def engine_model(manifest: Manifest, paths: PathSettings, *, timeout_s: float = 30.0) -> Path:
    """The ONNX file engines are built from: :func:`fetch_model`'s file, or its derived copy.

    The copy is derived on every call from the bytes just checked against the pin (a few milliseconds)
    and rewritten only when it differs, so a stale or damaged copy never outlives a restart.
    """
    source = fetch_model(manifest, paths, timeout_s=timeout_s)
    if not manifest.source.derived:
        return source
    derived = source.read_bytes()
    if manifest.source.sha256 and hashlib.sha256(derived).hexdigest() != manifest.source.sha256:
        raise ModelError(f"model {manifest.name}: {source} changed while it was read; try again")
    where = f"model {manifest.name} ({source.name})"
    if manifest.source.dynamic_batch:
        derived = make_batch_dynamic(derived, where=where)
    if manifest.source.fold_input_depthwise:
        derived = fold_input_depthwise_convs(derived, where=where)
    if manifest.source.merge_sibling_convs:
        derived = merge_sibling_separable_convs(derived, where=where)
    dest = derived_model_path(manifest, paths)
    if not (dest.is_file() and dest.read_bytes() == derived):
        try:
            with atomic_writer(dest) as out:
                out.write(derived)
        except OSError as exc:
            raise ModelError(f"model {manifest.name}: cannot write {dest}: {exc.strerror or exc}") from exc
        log.info("model %s: derived copy written to %s", manifest.name, dest)
    return dest
