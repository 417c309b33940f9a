"""`edge-agent attention analyze` on real photos, and model files obtained through the pinned fetcher."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.config import InferenceSettings, PathSettings, parse_config, to_toml, tomllib
from edge_agent.errors import ModelError
from edge_agent.inference.fetch import MIRROR_ENV
from edge_agent.inference.manifest import load_manifests
from edge_agent.inference.select import load_engine
from edge_agent.vision.cli_attention import add_attention_parser
from edge_agent.vision.pipeline import FaceResult, FrameAnalyser


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_attention_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["attention", "analyze", *argv])
    return int(args.func(args))


@pytest.fixture()
def cli_args(tmp_path: Path, model_mirror: Path) -> list[str]:
    config = tmp_path / "config.toml"
    config.write_text('[inference]\nbackend = "onnxruntime"\n')
    return ["--config", str(config), "--model-mirror", str(model_mirror),
            "--cache-dir", str(tmp_path / "cache")]


def test_analyze_prints_faces_with_pose_and_attentive_flag_as_json(faces_dir, cli_args, capsys, tmp_path):
    images = [str(faces_dir / "pexels" / "Test1.jpg"), str(faces_dir / "pexels" / "Test3.jpg")]
    assert _run([*images, "--json", *cli_args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pose_method"] == "fsanet"
    test1, test3 = report["images"]
    assert [f["attentive"] for f in test1["faces"]] == [False]
    assert [f["attentive"] for f in test3["faces"]] == [True, True, True]
    face = test3["faces"][0]
    assert set(face) == {"box", "score", "yaw", "pitch", "attentive"} and len(face["box"]) == 4
    assert not list(tmp_path.glob("*.png")), "no picture unless --annotate asks"


def test_annotate_writes_a_png_only_when_asked(faces_dir, cli_args, tmp_path, capsys):
    out = tmp_path / "out" / "annotated.png"
    assert _run([str(faces_dir / "pexels" / "Test7.jpg"), "--annotate", str(out), *cli_args]) == 0
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape == (1024, 1024, 3)
    assert "7 faces" in capsys.readouterr().out


def test_unreadable_inputs_are_reported_and_the_rest_still_analysed(faces_dir, cli_args, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code = _run([str(broken), str(text), str(tmp_path / "missing.png"),
                 str(faces_dir / "pexels" / "Test3.jpg"), *cli_args])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.jpg: not a readable image" in captured.err
    assert "notes.txt: neither an image nor a video" in captured.err
    assert "missing.png: no such file" in captured.err
    assert "3 faces, 3 attentive" in captured.out


def test_an_unreadable_photo_in_a_folder_is_reported_and_the_folders_other_photos_analysed(
    faces_dir, cli_args, tmp_path, capsys
):
    # A review: the first unreadable photo ended the whole folder, "images": [] for the two good ones after it
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    shutil.copy(faces_dir / "pexels" / "Test3.jpg", folder / "b.jpg")
    shutil.copy(faces_dir / "pexels" / "Test7.jpg", folder / "c.jpg")
    code = _run([str(folder), "--json", *cli_args])
    captured = capsys.readouterr()
    assert code == 1 and "a_broken.jpg: not a readable image" in captured.err
    assert [Path(image["input"]).name for image in json.loads(captured.out)["images"]] == ["b.jpg", "c.jpg"]


def test_photos_and_videos_whose_names_are_not_utf8_are_analysed_or_refused_not_a_crash(
    faces_dir, cli_args, tmp_path
):
    # A review: OpenCV's imread and VideoCapture crashed the process (SIGSEGV) on a Latin-1 name; the
    # annotated picture is written by its bytes too. A child process, so that a crash fails only this test.
    root = os.fsencode(tmp_path)
    photo, video = root + b"/cl\xe9.jpg", root + b"/le\xe7on.avi"
    shutil.copy(faces_dir / "pexels" / "Test3.jpg", os.fsdecode(photo))
    Path(os.fsdecode(video)).write_bytes(b"RIFF")
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "attention", "analyze", os.fsdecode(photo), os.fsdecode(video),
         "--annotate", os.fsdecode(root + b"/not\xe9.png"), *cli_args],
        check=False, capture_output=True, timeout=300,
    )
    assert done.returncode == 1, done.stderr.decode(errors="replace")[-2000:]
    assert b"3 faces, 3 attentive" in done.stdout
    assert b"OpenCV cannot open a file whose name is not UTF-8" in done.stderr
    annotated = np.fromfile(os.fsdecode(root + b"/not\xe9.png"), np.uint8)
    assert cv2.imdecode(annotated, cv2.IMREAD_COLOR).shape == (1024, 1024, 3)


def test_tiny_video_frames_are_refused_as_tiny_photos_are(cli_args, tmp_path, capsys):
    video = tmp_path / "tiny.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (16, 16))
    for _ in range(5):
        writer.write(np.full((16, 16, 3), 200, np.uint8))
    writer.release()
    assert _run([str(video), *cli_args]) == 1
    assert "tiny.avi: the video holds no readable frame of at least 32 px" in capsys.readouterr().err


def test_video_frames_are_sampled(faces_dir, cli_args, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 640))
    image = cv2.resize(cv2.imread(str(faces_dir / "pexels" / "Test3.jpg")), (640, 640))
    for _ in range(25):
        writer.write(image)
    writer.release()
    assert _run([str(video), "--json", "--every-s", "1.0", *cli_args]) == 0
    frames = json.loads(capsys.readouterr().out)["images"]
    assert [f["input"].rsplit("#", 1)[1] for f in frames] == ["frame0", "frame10", "frame20"]
    assert all(len(f["faces"]) == 3 for f in frames)


def test_missing_models_give_an_actionable_error(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    empty_mirror = tmp_path / "empty-mirror"
    empty_mirror.mkdir()
    manifest = load_manifests()["yunet"]
    offline = dataclasses.replace(manifest, source=dataclasses.replace(manifest.source, url="http://127.0.0.1:9/x"))
    with pytest.raises(ModelError, match=r"could not be obtained.*mirror"):
        load_engine(offline, InferenceSettings(backend="onnxruntime"),
                    PathSettings(cache_dir=tmp_path / "cache", model_mirror=empty_mirror))


def test_model_file_with_the_wrong_hash_is_refused(model_mirror, tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    mirror = tmp_path / "mirror"
    (mirror / "yunet").mkdir(parents=True)
    tampered = mirror / "yunet" / "yunet_s_dynamic.onnx"
    shutil.copy(model_mirror / "yunet" / "yunet_s_dynamic.onnx", tampered)
    with tampered.open("ab") as handle:
        handle.write(b"\0")
    manifest = load_manifests()["yunet"]
    offline = dataclasses.replace(manifest, source=dataclasses.replace(manifest.source, url="http://127.0.0.1:9/x"))
    paths = PathSettings(cache_dir=tmp_path / "cache", model_mirror=mirror)
    with pytest.raises(ModelError, match="sha256"):
        load_engine(offline, InferenceSettings(backend="onnxruntime"), paths)
    assert not (tmp_path / "cache" / "models" / "yunet" / "yunet_s_dynamic.onnx").exists()


def test_landmark_pose_loads_only_the_face_model(tmp_path, model_mirror, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    from edge_agent.config import parse_config
    from edge_agent.vision.engines import load_vision_engines

    config = parse_config(
        f'[inference]\nbackend = "onnxruntime"\n[attention]\npose_method = "landmarks"\n'
        f'[paths]\ncache_dir = "{tmp_path}"\nmodel_mirror = "{model_mirror}"\n'
    )
    engines = load_vision_engines(config)
    try:
        assert engines.pose == [] and [e.manifest.name for e in engines.loaded] == ["yunet"]
        assert engines.face.backend == "onnxruntime"
    finally:
        engines.close()


def _calibrate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_attention_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["attention", "calibrate", *argv])
    return int(args.func(args))


def test_calibrate_prints_config_lines_that_mirror_with_the_photo(faces_dir, cli_args, capsys, tmp_path):
    photo = faces_dir / "pexels" / "Test7.jpg"
    mirrored = tmp_path / "mirrored.png"
    cv2.imwrite(str(mirrored), cv2.flip(cv2.imread(str(photo)), 1))
    assert _calibrate([str(photo), *cli_args]) in (0, 1)  # 1 only if the faces disagree
    text = capsys.readouterr().out
    # the file given with --config, not /etc/edge-agent/config.toml whatever was given (a README review)
    assert f"board's config ({tmp_path / 'config.toml'};" in text or "do not look like a class" in text
    lines = text[text.index("\n[attention]\n") + 1 :]
    section = tomllib.loads(lines)["attention"]
    config = parse_config(to_toml({"attention": section}))  # the printed lines are a valid config
    assert _calibrate([str(mirrored), "--json", *cli_args]) in (0, 1)
    flipped = json.loads(capsys.readouterr().out)
    assert flipped["faces"] == 7
    # A camera mounted to the other side of the board: the same heads, turned the other way.
    assert flipped["calibration_yaw_deg"] == pytest.approx(-config.attention.calibration_yaw_deg, abs=3.0)
    # Pitch within 6: FSA-Net itself is not mirror-true on this photo (one face in the middle reads pitch
    # -4.9 and, mirrored, -18.5 with YuNet's slightly different box), so the median of 7 moves (-8.8 / -14.4).
    assert flipped["calibration_pitch_deg"] == pytest.approx(config.attention.calibration_pitch_deg, abs=6.0)
    # calibrate prints; the installer edits the config
    assert (tmp_path / "config.toml").read_text() == '[inference]\nbackend = "onnxruntime"\n'



def test_calibrate_reads_a_folder_as_the_camera_source_does_subfolders_included(
    faces_dir, cli_args, capsys, tmp_path
):
    # Found by a review: calibrate looked only at the folder's top level and refused the very folder the
    # daemon's camera.source read ("a folder with no ... image in it").
    nested = tmp_path / "class" / "monday"
    nested.mkdir(parents=True)
    shutil.copy(faces_dir / "pexels" / "Test7.jpg", nested / "Test7.jpg")
    assert _calibrate([str(tmp_path / "class"), "--json", *cli_args]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["faces"] == 7


def test_calibrate_without_photos_or_camera_says_what_to_give(cli_args, capsys):
    assert _calibrate(cli_args) == 2
    assert "give photos, a folder or a video of the class, or --camera" in capsys.readouterr().err


def test_calibrate_refuses_one_student_however_often_photographed(faces_dir, cli_args, capsys):
    one_man = str(faces_dir / "pexels" / "Test1.jpg")
    assert _calibrate([one_man, one_man, one_man, *cli_args]) == 2
    captured = capsys.readouterr()
    assert "no photo shows at least 3 faces with a head pose (the most in one: 1)" in captured.err
    assert captured.out == ""


def test_calibrate_can_look_through_the_configured_camera(faces_dir, tmp_path, model_mirror, capsys):
    config = tmp_path / "camera.toml"
    config.write_text(f'[inference]\nbackend = "onnxruntime"\n[camera]\nsource = "{faces_dir / "pexels"}"\n')
    base = ["--config", str(config), "--model-mirror", str(model_mirror), "--cache-dir", str(tmp_path / "c")]
    # 4 s: under CI load 2.5 s once gave too few frames, back when each frame's analysis counted against
    # the window (only the one-person photo: exit 2 "no photo shows at least 3 faces")
    assert _calibrate(["--camera", "--seconds", "4", "--json", *base]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    assert report["images"] >= 2 and report["faces"] >= 3
    files = {p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg")}
    assert files == set(), "camera frames stay in memory"

    config.write_text('[inference]\nbackend = "onnxruntime"\n[camera]\nsource = "/dev/video97"\n')
    assert _calibrate(["--camera", "--seconds", "1", *base]) == 2
    err = capsys.readouterr().err
    assert "the camera gave no frame in 1 s" in err and "cannot open" in err
    assert "systemctl stop edge-agent" in err and "nothing to calibrate from" in err

    # Round 2: with the camera off an empty source is taken, and calibrate then looked through "." (the
    # working directory's photos; under sudo from / the whole disk)
    config.write_text('[inference]\nbackend = "onnxruntime"\n[camera]\nenabled = false\nsource = ""\n')
    assert _calibrate(["--camera", "--seconds", "1", *base]) == 2
    assert "camera.source is empty" in capsys.readouterr().err


def test_calibrate_camera_samples_a_video_as_it_plays(faces_dir, tmp_path, model_mirror, capsys):
    video = tmp_path / "class.avi"  # 2 s of the 3-person photo, then 2 s of the 7-person one, at 10 fps
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for name in ("Test3.jpg", "Test7.jpg"):
        image = cv2.resize(cv2.imread(str(faces_dir / "pexels" / name)), (640, 480))
        for _ in range(20):
            writer.write(image)
    writer.release()
    config = tmp_path / "camera.toml"
    config.write_text(f'[inference]\nbackend = "onnxruntime"\n[camera]\nsource = "{video}"\n')
    base = ["--config", str(config), "--model-mirror", str(model_mirror), "--cache-dir", str(tmp_path / "c")]
    assert _calibrate(["--camera", "--seconds", "3.6", "--json", *base]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    # One frame a second of a video playing in real time: frames of both photos, not 4 frames of the first.
    assert report["images"] in (3, 4) and report["faces"] > 3 * report["images"], report


def test_calibrate_camera_takes_a_frame_a_second_however_long_their_analysis_takes(
    faces_dir, tmp_path, model_mirror, capsys, monkeypatch
):
    # A review: frames were analysed as taken and each analysis counted against the window, so a board
    # whose first analysis takes 3 s (TensorRT/CUDA warming up on a Jetson) looked at the class for
    # "3.6 s" and took 2 frames, not one a second as --camera's help and the README say.
    video = tmp_path / "class.avi"  # 6 s of the 7-person photo at 10 fps, played in real time
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    image = cv2.resize(cv2.imread(str(faces_dir / "pexels" / "Test7.jpg")), (640, 480))
    for _ in range(60):
        writer.write(image)
    writer.release()
    analyse, calls = FrameAnalyser.analyse, []

    def slow_first(self: FrameAnalyser, frame: np.ndarray) -> list[FaceResult]:
        calls.append(frame.shape)
        if len(calls) == 1:
            time.sleep(3.0)  # only the board's speed is stood in for: the models do the analysis
        return analyse(self, frame)

    monkeypatch.setattr(FrameAnalyser, "analyse", slow_first)
    config = tmp_path / "camera.toml"
    config.write_text(f'[inference]\nbackend = "onnxruntime"\n[camera]\nsource = "{video}"\n')
    base = ["--config", str(config), "--model-mirror", str(model_mirror), "--cache-dir", str(tmp_path / "c")]
    assert _calibrate(["--camera", "--seconds", "3.6", "--json", *base]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    assert report["images"] in (3, 4) and report["faces"] == 7 * report["images"], report


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--every-s", "nan"], "not a positive number"), (["--every-s", "0"], "not a positive number"),
     (["--max-frames", "0"], "at least 1"), (["--seconds", "-5", "--camera"], "not a positive number")],
)
def test_calibrate_refuses_nonsense_numbers(faces_dir, cli_args, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        _calibrate([str(faces_dir / "pexels" / "Test3.jpg"), *argv, *cli_args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_annotate_never_overwrites_an_input_and_names_what_it_wrote(faces_dir, cli_args, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    shutil.copy(faces_dir / "pexels" / "Test3.jpg", photo)
    before = photo.read_bytes()
    assert _run([str(photo), "--annotate", str(photo), *cli_args]) == 2
    assert "is one of the inputs" in capsys.readouterr().err and photo.read_bytes() == before
    assert _run([str(photo), "--annotate", str(tmp_path / "noext"), *cli_args]) == 2
    assert "could not write" in capsys.readouterr().err
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo, folder / "a.jpg")
    shutil.copy(faces_dir / "pexels" / "Test7.jpg", folder / "b.jpg")
    assert _run([str(folder), "--json", "--annotate", str(tmp_path / "out.png"), *cli_args]) == 0
    report = json.loads(capsys.readouterr().out)["images"]
    assert [(Path(e["input"]).name, len(e["faces"]), Path(e["annotated"]).name) for e in report] == [
        ("a.jpg", 3, "out-1.png"), ("b.jpg", 7, "out-2.png")]
    # Review: the photos inside a folder were not inputs to this check: "analyze photos/ --annotate
    # photos/class.jpg" wrote over photos/class-1.jpg and class-2.jpg, exit 0, not a word said
    (folder / "a.jpg").rename(folder / "class-1.jpg")
    (folder / "b.jpg").rename(folder / "class-2.jpg")
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert _run([str(folder), "--annotate", str(folder / "class.jpg"), *cli_args]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == kept


def _telemetry_files(home: Path) -> list[Path]:
    return [p for p in (home / ".cache" / "Microsoft").rglob("*") if p.is_file()]


def test_onnx_runtime_usage_telemetry_stays_off(tmp_path, faces_dir, model_mirror):
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    # What this onnxruntime does by itself: records usage events for Microsoft's collector under HOME.
    plain = tmp_path / "plain"
    plain.mkdir()
    model = model_mirror / "yunet" / "yunet_s_dynamic.onnx"
    code = f"import onnxruntime as o; o.InferenceSession({str(model)!r}, providers=['CPUExecutionProvider'])"
    subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(plain)}, check=True, timeout=120)
    if not _telemetry_files(plain):
        pytest.skip("this onnxruntime build records no telemetry")
    # The product's own command, in a fresh HOME: nothing recorded.
    board = tmp_path / "board"
    board.mkdir()
    photo = faces_dir / "pexels" / "Test3.jpg"
    cli = [sys.executable, "-m", "edge_agent", "attention", "analyze", str(photo),
           "--model-mirror", str(model_mirror), "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(cli, check=False, env={**env, "HOME": str(board)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3 faces" in done.stdout
    assert _telemetry_files(board) == []


def test_calibrate_camera_keeps_its_frames_compressed_until_they_are_analysed(faces_dir, tmp_path):
    # A review: 40 frames of a 4K stream held 1.18 GB (25 MB each, raw) before the first was analysed; the
    # default 120 would take 3 GB of an 8 GB board's memory, shared with its GPU.
    import tracemalloc

    from edge_agent.config import parse_config
    from edge_agent.vision.cli_attention import _camera_frames

    folder = tmp_path / "uhd"
    folder.mkdir()
    uhd = cv2.resize(cv2.imread(str(faces_dir / "pexels" / "Test7.jpg")), (3840, 2160))
    for n in range(4):
        cv2.imwrite(str(folder / f"{n}.png"), uhd)
    config = parse_config(f'[camera]\nsource = "{folder}"\n')
    tracemalloc.start()
    try:
        frames = _camera_frames(config, 4.5, 4)
        label, first = next(frames)  # every frame is taken before the first comes out
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rest = list(frames)
    assert first.shape == (2160, 3840, 3) and len(rest) >= 2, (label, len(rest))
    held = f"{peak / 2**20:.0f} MiB for {1 + len(rest)} frames of {uhd.nbytes / 2**20:.0f} MiB"
    assert peak < 3.5 * uhd.nbytes, held
