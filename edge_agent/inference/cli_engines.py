"""``edge-agent engines fetch | build | list | verify | quantize | bench``: model files and engines by hand.

Each handler returns an exit code: 0 done, 1 something failed (the message says what), 2 usage, 3 TensorRT
is needed but not available on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from edge_agent.argument_types import at_least, positive_seconds
from edge_agent.config import Config, InferenceSettings, PathSettings
from edge_agent.errors import EdgeAgentError
from edge_agent.inference import bench
from edge_agent.inference.bench import BenchRow
from edge_agent.inference.engine import Engine
from edge_agent.inference.manifest import (
    ENGINES_DIR,
    KT_MODEL,
    InputProfile,
    Manifest,
    board_model_names,
    load_manifests,
    resolve_profiles,
)

NO_TENSORRT = 3
BOARD_MODELS = "the models the daemon loads with --config's settings"


def _board_config(args: argparse.Namespace) -> Config:
    from edge_agent.config import find_config_path, load_config_for_command

    explicit = getattr(args, "config", None)
    path = find_config_path(explicit)
    if explicit and not path.is_file():  # the defaults instead chose the models and folders (round 2)
        raise EdgeAgentError(f"config file {path} not found")
    # As the daemon: edge-agent-engines.service runs this after a rollback too, when the config may hold a
    # key only the newer release knows (it refused "device.timezone" under systemd, 2026-12-01).
    return load_config_for_command(path) if path.is_file() else Config()


def _config(
    args: argparse.Namespace, config: Config | None = None
) -> tuple[InferenceSettings, PathSettings]:
    """The inference and path settings of ``config`` (read from --config when not given), with the
    command line's --cache-dir and --mirror."""
    config = config or _board_config(args)
    paths = config.paths
    updates: dict[str, object] = {}
    if getattr(args, "cache_dir", None):
        updates["cache_dir"] = Path(args.cache_dir).resolve()
    if getattr(args, "mirror", None):
        updates["model_mirror"] = Path(args.mirror).resolve()
    return config.inference, paths.model_copy(update=updates)


def _selected(args: argparse.Namespace, board: Config | None = None) -> list[Manifest]:
    """The manifests named on the command line; with none, those ``board`` (its config) loads, or all.
    A board built every manifest by default, yunet-2023mar too (fetched for minutes, never loaded; with
    no copy offline, a failed build at every boot)."""
    manifests = load_manifests(Path(args.manifests))
    if not manifests:  # a mistyped --manifests read as "the config loads none", exit 0 (a review)
        where = "does not exist" if not Path(args.manifests).is_dir() else "holds no *.toml model manifest"
        raise EdgeAgentError(f"--manifests {args.manifests} {where}: give the engines/ folder of the "
                             "edge-agent checkout (the default)")
    names = getattr(args, "names", None) or (list(manifests) if board is None else board_model_names(board))
    if not names:
        print("no model: the config loads none (kt.enabled and camera.enabled are false)", file=sys.stderr)
    unknown = [n for n in names if n not in manifests]
    if unknown:
        raise EdgeAgentError(f"unknown model(s) {unknown}; known: {', '.join(sorted(manifests))}")
    return [manifests[n] for n in names]


def as_the_daemon_runs(manifests: list[Manifest], board: Config) -> list[Manifest]:
    """``manifests`` with kt-step pointed at the KT package the daemon runs at its next start (the signed
    update installed last, or kt.package_dir): the commands built and checked the shipped model while the
    daemon loaded another, and built its own plan for minutes at every start after an update."""
    if all(m.name != KT_MODEL for m in manifests):
        return manifests
    from edge_agent.assembly import next_kt_package_dir
    from edge_agent.kt.updates import step_manifest_for

    package_dir = next_kt_package_dir(board)
    return [
        step_manifest_for(m, package_dir) if m.name == KT_MODEL and package_dir is not None else m
        for m in manifests
    ]


def cmd_list(args: argparse.Namespace) -> int:
    from edge_agent.inference.fetch import cached_model_path, sha256_file

    board = _board_config(args)
    _, paths = _config(args, board)
    for m in as_the_daemon_runs(_selected(args), board):
        origin = m.source.url or str(m.source.repo_path)
        local = m.source.repo_path if m.source.repo_path else cached_model_path(m, paths)
        state = "present" if local and local.is_file() else "not fetched"
        # only a pinned file is hashed (a few MB at most); a damaged one read "present" as a good one
        if state == "present" and m.source.sha256 and sha256_file(local) != m.source.sha256:
            state = "present (sha256 mismatch)"
        print(
            f"{m.name:15} {m.role:5} {m.default_precision:5} [{', '.join(m.precisions)}] {state:11} {origin}"
        )
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from edge_agent.inference.fetch import fetch_model

    board = _board_config(args)
    _, paths = _config(args, board)
    failed = 0
    for m in _selected(args, board):
        try:
            print(f"{m.name}: {fetch_model(m, paths, timeout_s=args.timeout)}")
        except EdgeAgentError as exc:
            print(f"{m.name}: FAILED: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Hash check of every local model, then one inference at the opt shape on ONNX Runtime."""
    import numpy as np

    from edge_agent.inference.fetch import cached_model_path, engine_model, fetch_model, sha256_file
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine, onnx_input_shapes

    board = _board_config(args)
    _, paths = _config(args, board)
    failed = 0
    for m in as_the_daemon_runs(_selected(args, board), board):
        path = m.source.repo_path or cached_model_path(m, paths)
        try:
            if m.source.sha256 and path.is_file() and sha256_file(path) != m.source.sha256:
                raise EdgeAgentError(
                    f"{path} does not match the pinned sha256; run `edge-agent engines fetch`"
                )
            path = fetch_model(m, paths) if args.fetch else path
            if not path.is_file():
                raise EdgeAgentError(f"{path} is missing; run `edge-agent engines fetch {m.name}`")
            path = engine_model(m, paths)  # the file present and verified: no download
            profiles = resolve_profiles(m, onnx_input_shapes(path))
            engine = OnnxRuntimeEngine(path, model_name=m.name)
            dtypes = {s.name: s.dtype for s in engine.inputs}
            engine.infer({p.name: np.zeros(p.opt, dtypes[p.name]) for p in profiles})
            print(f"{m.name}: OK ({path})")
        except EdgeAgentError as exc:
            print(f"{m.name}: FAILED: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_build(args: argparse.Namespace) -> int:
    from edge_agent.inference.select import load_engine
    from edge_agent.inference.tensorrt_backend import open_tensorrt

    board = _board_config(args)
    inference, paths = _config(args, board)
    try:
        open_tensorrt()
    except EdgeAgentError as exc:
        print(f"no engine built: TensorRT cannot run on this machine ({exc})", file=sys.stderr)
        return NO_TENSORRT
    failed = 0
    for m in as_the_daemon_runs(_selected(args, board), board):
        try:
            loaded = load_engine(
                m, inference.model_copy(update={"backend": "tensorrt"}), paths, precision=args.precision
            )
        except EdgeAgentError as exc:
            print(f"{m.name}: FAILED: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(loaded.describe())
        # not cached (a full disk): the unit would stamp it built and the daemon build it at every start
        failed += loaded.backend != "tensorrt" or loaded.uncached is not None
    return 1 if failed else 0


def _output_file(option: str, value: str, example: str) -> Path:
    """``value`` as a file this user can write, checked before minutes of work: a folder, a name that is
    not UTF-8 or a place nothing can be written (/proc) failed only after the work, with a traceback
    (a review)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # ONNX Runtime takes str paths only, as UTF-8
        raise EdgeAgentError(f"{option} {value!r}: the file name is not UTF-8; give a name of plain "
                             "letters, digits, - _ .") from None
    path = Path(value)
    if path.is_dir():
        raise EdgeAgentError(f"{option} {path} is a folder: give a file name, e.g. {path / example}")
    if not path.parent.is_dir():
        raise EdgeAgentError(f"{option} {path}: the folder {path.parent} does not exist")
    try:  # a real write, not os.access: root passes access() where nothing can be created (/proc, ro)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise EdgeAgentError(f"{option} {path}: cannot write in {path.parent} ({exc.strerror or exc}); "
                             "give a folder this user can write") from exc
    os.close(fd)
    os.unlink(probe)
    return path


def cmd_quantize(args: argparse.Namespace) -> int:
    from edge_agent.inference.fetch import atomic_writer, engine_model
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine, onnx_input_shapes
    from edge_agent.inference.quantize import calibration_inputs, compare_outputs, quantize_qdq
    from edge_agent.inference.select import qdq_model_path, qdq_record_text, qdq_source_record

    out_file = _output_file("--out", args.out, f"{args.names[0]}-int8.onnx") if args.out else None
    board = _board_config(args)
    _, paths = _config(args, board)
    (manifest,) = as_the_daemon_runs(_selected(args), board)
    source = engine_model(manifest, paths)
    profiles = resolve_profiles(manifest, onnx_input_shapes(source))
    samples = calibration_inputs(manifest, profiles, Path(args.data), args.samples + args.held_out)
    if len(samples) <= args.held_out:
        print(
            f"only {len(samples)} samples in {args.data}; need more than --held-out {args.held_out}",
            file=sys.stderr,
        )
        return 1
    calibration, held_out = samples[: -args.held_out], samples[-args.held_out :]
    dest = out_file or qdq_model_path(manifest, paths)
    # Measured before it goes where the loader (and the TensorRT build) takes it from: written in place,
    # an INT8 model of any accuracy ran as soon as a config asked for int8.
    trial = dest.with_name(f".{dest.name}.trial")
    try:
        quantize_qdq(source, trial, calibration, activation_symmetric=not args.asymmetric)
        fp32 = OnnxRuntimeEngine(source, model_name=manifest.name)
        int8 = OnnxRuntimeEngine(trial, model_name=manifest.name, precision="int8")
        frame = next(iter(held_out[0].values())).shape  # the detector's outputs are decoded at this size
        report = compare_outputs([fp32.infer(f) for f in held_out], [int8.infer(f) for f in held_out],
                                 detector_size=(frame[3], frame[2]) if manifest.role == "face" else None)
        int8.close()
        fp32.close()
        problem = report.problem(manifest.role)
        if problem is None or args.force:
            os.replace(trial, dest)
            with atomic_writer(qdq_source_record(dest)) as out:  # run as root, the cache owner's too
                out.write(qdq_record_text(source, symmetric=not args.asymmetric).encode())
    finally:
        trial.unlink(missing_ok=True)
    for line in report.lines():
        print(f"  {line}")
    if problem is not None and not args.force:
        # an INT8 model already there (an earlier --force, or a release that wrote it unmeasured) would
        # still be loaded: the message below would not be true
        earlier = dest == qdq_model_path(manifest, paths) and dest.is_file()  # never a file named by --out
        if earlier:
            dest.unlink()
            qdq_source_record(dest).unlink(missing_ok=True)
        print(f"{manifest.name}: INT8 model NOT written: {problem}"
              + (f"; the earlier one at {dest} was removed too" if earlier else "")
              + f". A board set to int8 for it runs it at {manifest.default_precision} on TensorRT, fp32 on "
              "ONNX Runtime; try --asymmetric (ONNX Runtime only), more --samples, or --force to write it "
              "anyway", file=sys.stderr)
        return 1
    print(f"{manifest.name}: Q/DQ INT8 model written to {dest} ({len(calibration)} calibration samples)"
          + (f"; WARNING, written with --force although {problem}" if problem else ""))
    if args.asymmetric:
        print("  note: asymmetric activations run on ONNX Runtime only; TensorRT, which needs symmetric "
              f"INT8, builds {manifest.default_precision} instead")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    json_out = _output_file("--json", args.json, "bench.json") if args.json else None
    board = _board_config(args)
    inference, paths = _config(args, board)
    rows: list[BenchRow] = []
    for m in as_the_daemon_runs(_selected(args), board):
        try:
            rows += _bench_model(m, inference, paths, args)
        except EdgeAgentError as exc:
            rows.append(bench.BenchRow(m.name, "-", "-", 1, note=f"skipped: {exc}"))
    print(bench.table(rows))
    if json_out:
        bench.to_json(rows, json_out)
    return 0


def _bench_model(
    m: Manifest, inference: InferenceSettings, paths: PathSettings, args: argparse.Namespace
) -> list[BenchRow]:
    from edge_agent.inference.fetch import engine_model
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine, onnx_input_shapes
    from edge_agent.inference.select import load_engine, qdq_model_path, qdq_problem

    source = engine_model(m, paths)
    profiles = resolve_profiles(m, onnx_input_shapes(source))
    engines: list[tuple[str, str, Engine]] = [
        (
            "onnxruntime",
            "fp32",
            OnnxRuntimeEngine(source, model_name=m.name, intra_op_threads=inference.intra_op_threads),
        )
    ]
    rows: list[BenchRow] = []
    # a stale one (another model version or release) was timed as if the board could run it
    unusable = qdq_problem(m, source, paths, tensorrt=False)
    if unusable is None:
        engines.append(
            (
                "onnxruntime",
                "int8",
                OnnxRuntimeEngine(
                    qdq_model_path(m, paths), model_name=m.name, precision="int8",
                    intra_op_threads=inference.intra_op_threads,
                ),
            )
        )
    elif "int8" in m.precisions:
        rows.append(bench.BenchRow(m.name, "onnxruntime", "int8", 1, note=f"skipped: {unusable}"))
    loaded = load_engine(m, inference.model_copy(update={"backend": "tensorrt"}), paths)
    if loaded.backend == "tensorrt":
        engines.append(("tensorrt", loaded.precision, loaded.engine))
    else:
        rows.append(
            bench.BenchRow(m.name, "tensorrt", loaded.requested_precision, 1, note=loaded.fallback or "")
        )
    for backend, precision, engine in engines:
        specs = engine.inputs
        for batch in _batches(profiles, args.batch):
            feeds = bench.synthetic_feeds(profiles, specs, batch)
            rows.append(
                bench.bench_row(
                    m, backend, precision, batch, engine.infer, feeds=feeds, iterations=args.iterations
                )
            )
    if m.torch_source:
        rows += _bench_torch(m, profiles, engines[0][2], args)
    return rows


def _batches(profiles: Sequence[InputProfile], larger: int) -> list[int]:
    """1 and ``larger``, capped at the most the profile takes: fsanet's stops at 8 (the daemon's chunk of
    faces) and yunet's at 1, where --batch's default 16 gave rows saying "outside the engine profile"."""
    return sorted({1, min(larger, *(p.max[0] for p in profiles))})


def _bench_torch(
    m: Manifest, profiles: Sequence[InputProfile], reference: Engine, args: argparse.Namespace
) -> list[BenchRow]:
    try:
        run = bench.torch_kt_step(m)
    except (ImportError, FileNotFoundError, KeyError) as exc:
        return [
            bench.BenchRow(m.name, "pytorch", "fp32", 1, note=f"skipped: PyTorch model unavailable ({exc})")
        ]
    rows: list[BenchRow] = []
    for batch in _batches(profiles, args.batch):
        feeds = bench.synthetic_feeds(profiles, reference.inputs, batch)
        row = bench.bench_row(m, "pytorch-eager", "fp32", batch, run, feeds=feeds, iterations=args.iterations)
        rows.append(bench.BenchRow(**{**row.__dict__, "note": "same architecture, weights not loaded"}))
    return rows


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    parser.add_argument("--manifests", default=str(ENGINES_DIR), help="folder of *.toml model manifests")
    parser.add_argument("--cache-dir", help="override paths.cache_dir (models and engines)")
    parser.add_argument("--mirror", help="override paths.model_mirror (also: $EDGE_AGENT_MODEL_MIRROR)")


def add_engines_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    engines = subparsers.add_parser("engines", help="fetch models, build and check inference engines")
    sub = engines.add_subparsers(dest="engines_command", required=True)

    def command(
        name: str, func: object, help_text: str, names: str | int = "*", default: str = "all manifests"
    ) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        _common(parser)
        if names == 1:  # exactly one model, no default
            parser.add_argument("names", nargs=1, metavar="name", help="model name")
        else:
            parser.add_argument("names", nargs=names, help=f"model names (default: {default})")
        parser.set_defaults(func=_guarded(func))
        return parser

    command("list", cmd_list, "list model manifests and what is present locally")
    fetch = command(
        "fetch", cmd_fetch, "fetch models (mirror first, then the official URL) and verify sha256",
        default=BOARD_MODELS,
    )
    # at most 5 minutes a wait: a live download then writes its .part well within fetch.STALE_PART_S
    fetch.add_argument("--timeout", type=positive_seconds(300), default=30.0,
                       help="seconds per network wait (the whole download: 10 times that)")
    verify = command(
        "verify", cmd_verify, "check hashes and run each model once on ONNX Runtime", default=BOARD_MODELS
    )
    verify.add_argument("--fetch", action="store_true", help="fetch missing models first")
    build = command(
        "build", cmd_build, "build TensorRT engines into the cache (needs TensorRT and a GPU)",
        default=BOARD_MODELS,
    )
    build.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="default: from the config")
    quantize = command("quantize", cmd_quantize, "write an INT8 Q/DQ model and report its accuracy change", 1)
    quantize.add_argument("--data", required=True, help="folder of photos (frames or faces) for calibration")
    quantize.add_argument("--samples", type=at_least(1), default=64, help="calibration samples")
    quantize.add_argument(
        "--held-out", type=at_least(1), default=8, help="samples kept out to measure accuracy"
    )
    quantize.add_argument(
        "--asymmetric", action="store_true", help="asymmetric activations (ONNX Runtime only)"
    )
    quantize.add_argument("--out", help="output file (default: the cache, where the loader looks)")
    quantize.add_argument(
        "--force", action="store_true", help="write the INT8 model even when less accurate than the limit"
    )
    bench_parser = command("bench", cmd_bench, "latency and throughput per model, backend and precision")
    bench_parser.add_argument("--iterations", type=at_least(1), default=200)
    bench_parser.add_argument(
        "--batch", type=at_least(1), default=16, help="the larger batch (at most the profile's largest)"
    )
    bench_parser.add_argument("--json", help="also write the rows to this JSON file")


def _guarded(func: object) -> object:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))  # type: ignore[operator]
        except EdgeAgentError as exc:
            print(f"edge-agent engines {args.engines_command}: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # the disk, not the model: a full cache, a file removed under the command
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"edge-agent engines {args.engines_command}: {where}{exc.strerror or exc}", file=sys.stderr)
            return 1

    return run
