"""Signed model packages: a directory (or a tar of one) with ``manifest.json``, ``manifest.sig`` and files.

The tar holds the package's files at its top, not its folder: ``tar -C <folder> -cf kt-2.0.tar .``

The manifest names the model, its version and the sha256 and size of every file; ``manifest.sig`` is an
ed25519 signature over the exact bytes of ``manifest.json`` made with the fleet signing key. A package is
accepted only if the signature verifies with a trusted public key, every listed file matches, and nothing
unlisted, linked or outside the package is present.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent import json_input
from edge_agent.errors import ProvisioningError
from edge_agent.inference.fetch import sha256_file
from edge_agent.provisioning.files import write_private, write_public

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FILE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
MAX_TAR_BYTES = 512 * 1024**2  # as updates.max_download_bytes: a KT package is a few MB
MAX_TAR_MEMBERS = 256
MAX_TAR_HEADER_BYTES = 64 * 1024  # a long name's or pax header's own body: a package's names are short
# Read whole before the signature is checked, so bounded first: an unsigned 2.2 MB .tar.gz whose manifest.json
# unpacked to 500 MiB took the daemon from 128 to 640 MB (a review). A manifest lists at most
# MAX_TAR_MEMBERS files (~100 bytes each); an ed25519 signature is 64 bytes.
MAX_MANIFEST_BYTES = 1024**2
MAX_SIGNATURE_BYTES = 1024
_SMALL_FILES = {MANIFEST: MAX_MANIFEST_BYTES, SIGNATURE: MAX_SIGNATURE_BYTES}
# the board's disk, not the package: a full or failing disk must not have a good package refused
BOARD_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


class _BoundedHeaders(tarfile.TarInfo):
    """tarfile reads a GNU long-name or pax header's body whole, by the size it declares, before any member
    is seen: a 261 KB .tar.gz in the inbox had the daemon take 2 GiB (a review). Such a header over
    MAX_TAR_HEADER_BYTES is refused first (TarInfo._proc_member: the same in Python 3.10 to 3.13)."""

    EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE)

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in self.EXTENDED and self.size > MAX_TAR_HEADER_BYTES:
            raise tarfile.HeaderError(f"an extended header of {self.size} bytes "
                                      f"(at most {MAX_TAR_HEADER_BYTES})")
        proc: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
        return proc


class PackageRejected(ProvisioningError):
    """The package is unsigned, tampered with, or malformed; nothing was installed."""


class BoardDiskError(ProvisioningError):
    """The board could not write the package's files (its disk is full, read-only or failing): nothing was
    installed, and the package is not at fault, so the inbox keeps it to try again."""


def disk_error(exc: OSError, doing: str) -> BoardDiskError | None:
    """A BoardDiskError for ``exc`` when the board's own disk failed it, else None."""
    if exc.errno not in BOARD_DISK_ERRNOS:
        return None
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return BoardDiskError(
        f"cannot {doing}: {exc.strerror or exc} ("
        + ("the board's disk is full: free space there" if full
           else "the board's disk is read-only or failing: check it, e.g. dmesg")
        + ")"
    )


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    files: dict[str, str]  # relative path -> sha256 hex


def generate_signing_key(private_path: Path, public_path: Path) -> None:
    # a second keygen over the fleet's key would make every package signed afterwards fail on the boards
    for path in (private_path, public_path):
        if path.exists() and path.stat().st_size > 0:  # an empty file (mktemp) holds no key
            raise ProvisioningError(
                f"{path} already exists: the boards trust the key pair there; move it away first only "
                "to start a new key (then provision the boards with the new .pub)"
            )
    key = Ed25519PrivateKey.generate()
    write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    try:
        write_public(
            public_path,
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    except BaseException:
        # a private key without its .pub signs nothing the boards can check, and left there it made the
        # rerun refuse with "already exists" (a review: the .pub's folder was read-only)
        private_path.unlink(missing_ok=True)
        raise


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProvisioningError(f"cannot read model signing public key {path}: {exc}") from exc
    if re.search(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", data):  # the armour, not a comment's words
        raise ProvisioningError(
            f"{path} is a private key: give the public one (the .pub that edge-agent-model keygen wrote) "
            "and keep the private key off the boards"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ProvisioningError(f"cannot read model signing public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ProvisioningError(f"{path} is not an ed25519 public key")
    return key


def _payload_files(directory: Path) -> list[Path]:
    # only the top-level pair is the signature's own: an extra/manifest.json is payload like any other file,
    # so one the manifest does not list is refused as unlisted
    top = {directory / MANIFEST, directory / SIGNATURE}
    return sorted(p for p in directory.rglob("*") if p not in top and not p.is_dir())


def _links(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_symlink()]


def sign_package(directory: Path, private_key_path: Path, name: str, version: str) -> Manifest:
    """Write manifest.json (every file's sha256) and manifest.sig for the package in ``directory``."""
    if not (_NAME.fullmatch(name) and _NAME.fullmatch(version)):
        raise ProvisioningError("model name and version must be letters, digits, _ . - (1-64 chars)")
    try:
        key = serialization.load_pem_private_key(private_key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProvisioningError(f"cannot read signing key {private_key_path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ProvisioningError(f"{private_key_path} is not an ed25519 private key")
    payload = {p.relative_to(directory).as_posix(): p for p in _payload_files(directory)}
    # what verify_package refuses is refused here: signed, such a package could never be installed
    links = [p.name for p in _links(directory)]
    unsafe = [rel for rel in payload if not _FILE.fullmatch(rel)]
    if links or unsafe:
        raise ProvisioningError(f"{directory}: no board would install it: links {links[:3]}, names of other "
                                f"than letters, digits, _ . - and / {unsafe[:3]}")
    files = {rel: sha256_file(p) for rel, p in payload.items()}
    if not files:
        raise ProvisioningError(f"{directory} holds no model files to sign")
    body = {
        "format": 1,
        "name": name,
        "version": version,
        "created": int(time.time()),
        "files": {k: {"sha256": v} for k, v in files.items()},
    }
    data = json.dumps(body, indent=1, sort_keys=True).encode()
    (directory / MANIFEST).write_bytes(data)
    (directory / SIGNATURE).write_bytes(key.sign(data))
    return Manifest(name, version, files)


def _parse_manifest(data: bytes) -> Manifest:
    try:
        body = json_input.loads(data)
        name, version, files = body["name"], body["version"], body["files"]
        hashes = {str(k): str(v["sha256"]) for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PackageRejected(f"manifest.json is malformed: {exc}") from exc
    if not (isinstance(name, str) and _NAME.fullmatch(name)
            and isinstance(version, str) and _NAME.fullmatch(version)):
        raise PackageRejected("manifest name or version is not a safe identifier")
    bad = [k for k in hashes if not _FILE.fullmatch(k) or ".." in k.split("/")]
    if bad or not hashes:
        raise PackageRejected(f"manifest lists unsafe or no file names: {bad[:3]}")
    return Manifest(name, version, hashes)


def verify_package(directory: Path, trusted: list[Ed25519PublicKey], source: str | None = None) -> Manifest:
    """The manifest, if the package is intact and signed by a trusted key; else PackageRejected.

    ``source`` names the package in the messages where ``directory`` is a staging folder whose random
    name would tell the reader nothing (a tar unpacked for checking)."""
    source = source or directory.name
    try:
        data = _read_small(directory / MANIFEST, source)
        signature = _read_small(directory / SIGNATURE, source)
    except FileNotFoundError as exc:
        raise PackageRejected(f"package {source} is unsigned (no {Path(exc.filename).name})") from exc
    except OSError as exc:  # a folder named manifest.json (a review: a traceback from verify)
        raise PackageRejected(f"package {source}: cannot read {Path(exc.filename or MANIFEST).name}: "
                              f"{exc.strerror or exc}") from exc
    if not trusted:
        raise PackageRejected("no trusted model signing key is installed (model-signing.pub)")
    for key in trusted:
        try:
            key.verify(signature, data)
            break
        except InvalidSignature:
            continue
    else:
        raise PackageRejected(f"package {source}: the signature does not verify with any trusted key")
    manifest = _parse_manifest(data)
    present = {p.relative_to(directory).as_posix() for p in _payload_files(directory)}
    links = _links(directory)
    if links:
        raise PackageRejected(f"package contains links: {links[0].name}")
    if present != set(manifest.files):
        extra, missing = present - set(manifest.files), set(manifest.files) - present
        raise PackageRejected(
            f"package files differ from the manifest (extra {sorted(extra)[:3]}, "
            f"missing {sorted(missing)[:3]})"
        )
    for rel, expected in manifest.files.items():
        if sha256_file(directory / rel) != expected:
            raise PackageRejected(f"{rel}: sha256 does not match the signed manifest (tampered or corrupted)")
    return manifest


def _read_small(path: Path, source: str) -> bytes:
    """The file's bytes, refused past its bound without reading more than that (not by a stat first: the
    file could grow in between)."""
    limit = _SMALL_FILES[path.name]
    with path.open("rb") as file:
        data = file.read(limit + 1)
        if len(data) > limit:
            size = os.fstat(file.fileno()).st_size
            raise PackageRejected(f"package {source}: {path.name} is {size} bytes, more than {limit}: not a "
                                  "package made by edge-agent-model sign")
    return data


def stage_and_verify(package: Path, staging: Path, trusted: list[Ed25519PublicKey]) -> Manifest:
    """Copy a package folder, or unpack its tar, into ``staging`` (which must not exist) and verify it
    there, not at the source, which a sender could still change: what a board does with a delivered
    package, and what `edge-agent-model verify` checks."""
    if package.is_dir():
        shutil.copytree(package, staging, symlinks=True)
    elif package.is_file():
        extract_tar(package, staging)
    else:
        raise PackageRejected(f"model package {package} does not exist")
    return verify_package(staging, trusted, source=package.name)


def extract_tar(archive: Path, destination: Path) -> None:
    """Unpack a package tar, refusing links, devices, absolute or escaping names and oversized content.

    Runs before the signature is checked (the signed manifest is inside), so every name is judged by its
    normalised parts: "./../x" once passed as "x", and "//x" (a root of its own in POSIX paths) as not
    starting with "/", and both were written outside ``destination``. Each target is checked to lie inside
    it as well."""
    try:
        with tarfile.open(archive, tarinfo=_BoundedHeaders) as tar:
            members: list[tuple[tarfile.TarInfo, Path]] = []
            total = 0
            for count, member in enumerate(tar):
                name = PurePosixPath(member.name)
                parts = name.parts
                if count >= MAX_TAR_MEMBERS:  # skipped "./" entries count: a million is not read through
                    raise PackageRejected(f"{archive.name}: more than {MAX_TAR_MEMBERS} entries")
                if member.isdir() and not parts:
                    continue  # "./", the top folder itself, written by tar -C <folder> -cf x.tar .
                if (not (member.isfile() or member.isdir()) or not parts or name.is_absolute()
                        or ".." in parts or "\\" in member.name):
                    raise PackageRejected(f"{archive.name}: unsafe entry {member.name[:100]!r}")
                total += member.size
                limit = _SMALL_FILES.get(parts[0]) if len(parts) == 1 else None
                if limit is not None and member.size > limit:
                    raise PackageRejected(f"{archive.name}: {parts[0]} is {member.size} bytes, more than "
                                          f"{limit}: not a package made by edge-agent-model sign")
                if total > MAX_TAR_BYTES:
                    raise PackageRejected(f"{archive.name}: unpacks to more than {MAX_TAR_BYTES} bytes")
                members.append((member, Path(*parts)))
            paths = {relative for _, relative in members}
            if Path(MANIFEST) not in paths and any(p.name == MANIFEST for p in paths):
                # a signed package tarred with its folder (tar -cf x.tar pkg): say so before unpacking,
                # where verify_package would call it unsigned
                raise PackageRejected(
                    f"{archive.name}: no {MANIFEST} at the top of the archive; pack the package's files, "
                    f"not its folder: tar -C <folder> -cf {archive.name} ."
                )
            destination.mkdir(parents=True, exist_ok=True)
            inside = destination.resolve()
            for member, relative in members:
                target = destination / relative
                if not target.resolve().is_relative_to(inside):
                    raise PackageRejected(f"{archive.name}: unsafe entry {member.name[:100]!r}")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                source = tar.extractfile(member)
                if source is None:
                    raise PackageRejected(f"{archive.name}: cannot read {member.name[:100]!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)  # not source.read(): a member may be huge
    except RecursionError as exc:  # tarfile reads each chained long-name or pax header by recursion
        raise _nested_too_deep(archive) from exc
    except OSError as exc:
        # a full disk unpacking a good package is the board's problem: not "not a readable tar archive"
        if (on_board := disk_error(exc, f"unpack {archive.name} into {destination.parent}")) is not None:
            raise on_board from exc
        raise _unreadable(archive, exc) from exc
    except (tarfile.TarError, EOFError) as exc:
        raise _unreadable(archive, exc) from exc


def is_package_tar(path: Path) -> bool:
    """Whether ``path`` reads as a tar archive: tarfile.is_tarfile, its RecursionError a refusal."""
    try:
        return tarfile.is_tarfile(path)
    except RecursionError as exc:
        raise _nested_too_deep(path) from exc


def _nested_too_deep(archive: Path) -> PackageRejected:
    return PackageRejected(f"{archive.name}: thousands of chained long-name or pax headers, nested too deep "
                           "to read: not a package made by edge-agent-model sign and tar")


def _unreadable(archive: Path, exc: BaseException) -> PackageRejected:
    return PackageRejected(
        f"{archive.name} is not a readable tar archive: {str(exc)[:300]} (a copy still being written? "
        "copy under a hidden name such as .x.tar, then mv it into the inbox)"
    )
