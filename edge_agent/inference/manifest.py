"""Model manifests (``engines/*.toml``): where a model comes from and how to build an engine for it.

A manifest names the ONNX source (an official URL pinned by sha256, or a file in the repository), the
path the model has inside a local mirror, whether engines run a derived copy with a symbolic batch
dimension (``dynamic_batch``, for exports that fix it at 1), with a depthwise convolution on the input
folded into the next one (``fold_input_depthwise``) and with sibling separable heads stacked into one
(``merge_sibling_convs``), the optimization profile of every input
(min/opt/max shapes), the precisions it may run at, and for INT8 the calibration data it needs. Parsing
is pure; every problem is reported with the manifest's file name and the key, so a typo is fixed without
reading code.

Inputs whose names are only known from the ONNX (the knowledge-tracing step model, replaced by schools)
may instead give ``[profile.dynamic]``: one min/opt/max range applied to every dynamic dimension.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import ModelError

if TYPE_CHECKING:
    from edge_agent.config import Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6 ships Python 3.10
    import tomli as tomllib

PRECISIONS = ("fp32", "fp16", "int8")
ROLES = ("face", "pose", "kt", "other")
CALIBRATION_KINDS = ("frames", "face_crops", "sequences")
ENGINES_DIR = Path(__file__).resolve().parents[2] / "engines"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_DERIVING = ("dynamic_batch", "fold_input_depthwise", "merge_sibling_convs")  # source flags: a derived copy

# The manifests the daemon loads; engines/ holds others (yunet-2023mar: the official file, for comparison)
KT_MODEL = "kt-step"
FACE_MODEL = "yunet"
POSE_MODELS = ("fsanet-1x1", "fsanet-var")


def board_model_names(config: Config) -> list[str]:
    """The manifests the daemon loads with ``config``: what `engines build` builds on a board."""
    names = [KT_MODEL] if config.kt.enabled else []
    if config.camera.enabled:
        names.append(FACE_MODEL)
        if config.attention.pose_method == "fsanet":
            names += list(POSE_MODELS)
    return names


@dataclass(frozen=True)
class InputProfile:
    """Shapes of one input for a TensorRT optimization profile; also the bounds every backend enforces."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= dim <= hi for lo, dim, hi in zip(self.min, shape, self.max, strict=False)
        )


@dataclass(frozen=True)
class DynamicRange:
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class Source:
    url: str | None
    repo_path: Path | None  # absolute, resolved against the manifest's folder
    sha256: str | None
    mirror_path: str
    # Engines run a derived copy whose batch dimension is symbolic (inference/batch_dim.py) and/or whose
    # depthwise convolutions on the input are folded into the 1x1 ones after them, and/or whose sibling
    # separable heads on one tensor are stacked into one pair (inference/conv_fold.py).
    dynamic_batch: bool = False
    fold_input_depthwise: bool = False
    merge_sibling_convs: bool = False

    @property
    def derived(self) -> bool:
        return self.dynamic_batch or self.fold_input_depthwise or self.merge_sibling_convs


@dataclass(frozen=True)
class Calibration:
    kind: str  # frames | face_crops | sequences
    samples: int
    description: str


@dataclass(frozen=True)
class Manifest:
    name: str
    role: str
    description: str
    source: Source
    inputs: tuple[InputProfile, ...]
    dynamic: DynamicRange | None
    precisions: tuple[str, ...]
    default_precision: str
    calibration: Calibration | None
    preprocess: str
    torch_source: str | None = None  # "module:callable" of a PyTorch equivalent, for bench
    path: Path | None = field(default=None, compare=False)

    def input_profile(self, name: str) -> InputProfile | None:
        return next((p for p in self.inputs if p.name == name), None)


def _problem(where: str, key: str, message: str) -> ModelError:
    return ModelError(f"manifest {where}: {key}: {message}")


def _table(data: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> dict[str, Any]:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise _problem(where, key, "missing table" if value is None else "must be a table")
    return value


def _str(data: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _problem(where, key, "must be a non-empty string")
    return value


def _reject_unknown(data: Mapping[str, Any], allowed: set[str], where: str, table: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _problem(
            where, table, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _shape(value: Any, where: str, key: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    ):
        raise _problem(where, key, "must be a list of positive integers, e.g. [1, 3, 64, 64]")
    return tuple(value)


def _input(raw: Any, where: str, index: int) -> InputProfile:
    key = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise _problem(where, key, "must be a table with name, min, opt, max")
    _reject_unknown(raw, {"name", "min", "opt", "max"}, where, key)
    name = _str(raw, "name", where) or ""
    lo, opt, hi = (_shape(raw.get(k), where, f"{key}.{k}") for k in ("min", "opt", "max"))
    if not len(lo) == len(opt) == len(hi):
        raise _problem(where, key, "min, opt and max must have the same number of dimensions")
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=False)):
        raise _problem(where, key, f"need min <= opt <= max in every dimension, got {lo} / {opt} / {hi}")
    return InputProfile(name, lo, opt, hi)


def _dynamic(raw: Mapping[str, Any], where: str) -> DynamicRange:
    values = [raw.get(k) for k in ("min", "opt", "max")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise _problem(where, "profile.dynamic", "min, opt and max must be positive integers")
    lo, opt, hi = (int(v) for v in values)  # type: ignore[arg-type]
    if not lo <= opt <= hi:
        raise _problem(where, "profile.dynamic", f"need min <= opt <= max, got {lo} / {opt} / {hi}")
    return DynamicRange(lo, opt, hi)


def _source(raw: Mapping[str, Any], where: str, base: Path) -> Source:
    _reject_unknown(
        raw,
        {"url", "repo_path", "sha256", "mirror_path", "licence", *_DERIVING},
        where,
        "source",
    )
    url = _str(raw, "url", where, required=False)
    repo = _str(raw, "repo_path", where, required=False)
    sha = _str(raw, "sha256", where, required=False)
    mirror = _str(raw, "mirror_path", where) or ""
    if (url is None) == (repo is None):
        raise _problem(where, "source", "give exactly one of url (official download) or repo_path")
    if url is not None and not url.startswith("https://"):
        raise _problem(where, "source.url", "must be an https:// URL")
    if url is not None and sha is None:
        raise _problem(where, "source.sha256", "a downloaded model must be pinned by its sha256")
    if sha is not None and not _SHA.match(sha):
        raise _problem(where, "source.sha256", "must be 64 lowercase hex digits")
    if mirror.startswith("/") or ".." in Path(mirror).parts:
        raise _problem(where, "source.mirror_path", "must be a relative path inside the mirror")
    flags = {key: raw.get(key, False) for key in _DERIVING}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise _problem(where, f"source.{key}", "must be true or false")
    return Source(url, (base / repo).resolve() if repo else None, sha, mirror, **flags)


def _calibration(raw: Mapping[str, Any], where: str) -> Calibration:
    _reject_unknown(raw, {"kind", "samples", "description"}, where, "int8")
    kind = _str(raw, "kind", where) or ""
    if kind not in CALIBRATION_KINDS:
        raise _problem(where, "int8.kind", f"must be one of {', '.join(CALIBRATION_KINDS)}")
    samples = raw.get("samples", 64)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise _problem(where, "int8.samples", "must be a positive integer")
    return Calibration(kind, samples, str(raw.get("description", "")))


def parse_manifest(data: Mapping[str, Any], where: str, base: Path) -> Manifest:
    """Validate one manifest's TOML data; ``base`` is the folder repo paths are relative to."""
    _reject_unknown(data, {"model", "source", "inputs", "profile", "build", "int8"}, where, "top level")
    model = _table(data, "model", where)
    _reject_unknown(model, {"name", "role", "description", "preprocess", "torch_source"}, where, "model")
    name = _str(model, "name", where) or ""
    if not _NAME.match(name):
        raise _problem(where, "model.name", "use lowercase letters, digits, '-', '_' or '.'")
    role = _str(model, "role", where) or ""
    if role not in ROLES:
        raise _problem(where, "model.role", f"must be one of {', '.join(ROLES)}")
    raw_inputs = data.get("inputs", [])
    if not isinstance(raw_inputs, list):
        raise _problem(where, "inputs", "must be an array of tables ([[inputs]])")
    inputs = tuple(_input(raw, where, i) for i, raw in enumerate(raw_inputs))
    if len({p.name for p in inputs}) != len(inputs):
        raise _problem(where, "inputs", "input names must be unique")
    profile = _table(data, "profile", where, required=False)
    dynamic = _dynamic(_table(profile, "dynamic", where), where) if profile else None
    if not inputs and dynamic is None:
        raise _problem(where, "inputs", "give [[inputs]] shapes or a [profile.dynamic] range")
    build = _table(data, "build", where)
    _reject_unknown(build, {"precisions", "default_precision"}, where, "build")
    precisions = build.get("precisions")
    if not isinstance(precisions, list) or not precisions or any(p not in PRECISIONS for p in precisions):
        raise _problem(where, "build.precisions", f"must be a list drawn from {', '.join(PRECISIONS)}")
    default = _str(build, "default_precision", where) or ""
    if default not in precisions:
        raise _problem(where, "build.default_precision", f"must be one of {precisions}")
    int8 = _table(data, "int8", where, required=False)
    calibration = _calibration(int8, where) if int8 else None
    if "int8" in precisions and calibration is None:
        raise _problem(
            where, "int8", "int8 is listed in build.precisions, so [int8] must say which data calibrates it"
        )
    return Manifest(
        name=name,
        role=role,
        description=str(model.get("description", "")),
        source=_source(_table(data, "source", where), where, base),
        inputs=inputs,
        dynamic=dynamic,
        precisions=tuple(precisions),
        default_precision=default,
        calibration=calibration,
        preprocess=str(model.get("preprocess", "none")),
        torch_source=_str(model, "torch_source", where, required=False),
    )


def load_manifest(path: Path) -> Manifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"manifest {path} cannot be read: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"manifest {path} is not valid TOML: {exc}") from exc
    manifest = parse_manifest(data, path.name, path.parent)
    return Manifest(**{**manifest.__dict__, "path": path})


def load_manifests(directory: Path = ENGINES_DIR) -> dict[str, Manifest]:
    """Every ``*.toml`` manifest of a folder, by model name; duplicate names are an error."""
    if directory == ENGINES_DIR and not directory.is_dir():
        # A wheel, or `pip install .`, holds no engines/ (a review: "no engine manifest ...; reinstall
        # edge-agent", which cannot help)
        raise ModelError(
            f"{directory} is not there: edge-agent runs from its source tree, with engines/ beside "
            "edge_agent/; install it with `pip install -e <checkout>` (as provisioning/install.sh does), "
            "not from a wheel or `pip install .`"
        )
    found: dict[str, Manifest] = {}
    for path in sorted(directory.glob("*.toml")):
        manifest = load_manifest(path)
        if manifest.name in found:
            raise ModelError(
                f"manifest {path.name}: model.name {manifest.name!r} is used twice in {directory}"
            )
        found[manifest.name] = manifest
    return found


def resolve_profiles(
    manifest: Manifest, onnx_inputs: Mapping[str, tuple[int, ...]]
) -> tuple[InputProfile, ...]:
    """The profile of every ONNX input: explicit manifest entries, else the dynamic range on each -1 dim.

    ``onnx_inputs`` maps input names to their ONNX shapes (-1 where dynamic). Mismatches between the
    manifest and the model are :class:`ModelError`: a replaced model must come with a matching manifest.
    """
    profiles: list[InputProfile] = []
    for name, shape in onnx_inputs.items():
        explicit = manifest.input_profile(name)
        if explicit is not None:
            _check_explicit(manifest, explicit, shape)
            profiles.append(explicit)
        elif manifest.dynamic is not None:
            dyn = manifest.dynamic
            profiles.append(
                InputProfile(
                    name,
                    tuple(dyn.min if d < 0 else d for d in shape),
                    tuple(dyn.opt if d < 0 else d for d in shape),
                    tuple(dyn.max if d < 0 else d for d in shape),
                )
            )
        else:
            raise ModelError(
                f"{manifest.name}: the ONNX input {name!r} has no [[inputs]] entry in the manifest"
            )
    unknown = sorted({p.name for p in manifest.inputs} - set(onnx_inputs))
    if unknown:
        raise ModelError(f"{manifest.name}: manifest inputs {unknown} are not inputs of the ONNX model")
    return tuple(profiles)


def _check_explicit(manifest: Manifest, profile: InputProfile, shape: tuple[int, ...]) -> None:
    if len(shape) != len(profile.min):
        raise ModelError(
            f"{manifest.name}: input {profile.name!r} has {len(shape)} dimensions in the ONNX, "
            f"{len(profile.min)} in the manifest"
        )
    for axis, dim in enumerate(shape):
        if dim >= 0 and not profile.min[axis] == profile.max[axis] == dim:
            raise ModelError(
                f"{manifest.name}: input {profile.name!r} dimension {axis} is fixed at {dim} in the ONNX "
                f"but the manifest profile gives {profile.min[axis]}..{profile.max[axis]}"
            )
