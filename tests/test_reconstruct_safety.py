"""`face3dkit reconstruct` never loses or fakes a result; devices, threads and option checks.

Every run uses tiny flat photos with landmark files the test writes (``--landmarks file``), two
landmark iterations and no photometric stage, so each test is fast; what is checked is the
bookkeeping (folders, markers, summaries, exit codes), against values the test knows.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import face3dkit
from face3dkit._cli.face3dkit_cmd import main

# one thread: the test machines are shared (the default would take one per core)
FAST = ["--landmarks", "file", "--landmark-iters", "2", "--iters", "0", "--save", "pose,lm", "--no-progress",
        "--threads", "1"]
SIZE = 96


@pytest.fixture(scope="module")
def lm68() -> np.ndarray:
    """(68, 2) landmarks of the mean face (Deng camera, 224 px) scaled into a SIZE-px photo."""
    m = face3dkit.load_model("default")
    c = m.sample(1, generator=torch.Generator().manual_seed(0))
    c.id.zero_()
    c.exp.zero_()
    with torch.no_grad():
        lm = m(c, camera=face3dkit.PerspectiveCamera()).landmarks2d[0].numpy()
    return lm * (SIZE / 224)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The CLI sets torch's threads for its process; give the test process its setting back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def photo(folder: Path, name: str, lm: np.ndarray, grey: int = 120, landmarks: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    Image.new("RGB", (SIZE, SIZE), (grey, grey, grey)).save(p)
    if landmarks:
        np.save(folder / f"{Path(name).stem}.npy", lm)
    return p


def run(*args: str | os.PathLike):
    return CliRunner().invoke(main, ["reconstruct", *map(str, args)])


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def csv_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def marker(folder: Path, stem: str) -> dict:
    return json.loads((folder / f"{stem}.done.json").read_text())


# ------------------------------------------------------------------------------------------ folders


def test_same_stem_other_extension_gets_its_own_folder(tmp_path, lm68):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photo(photos, "face.jpg", lm68, grey=60)
    photo(photos, "face.png", lm68, grey=200)  # face.npy serves both
    photo(photos, "solo.png", lm68)
    r = run(photos, "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    assert "3 face(s) reconstructed from 3 image(s)" in r.output
    # colliding stems: stem + extension; no collision: plain out/<stem>/ as before
    assert marker(out / "face.jpg", "face")["image"] == str(photos / "face.jpg")
    assert marker(out / "face.png", "face")["image"] == str(photos / "face.png")
    assert marker(out / "solo", "solo")["image"] == str(photos / "solo.png")
    assert not (out / "face").exists()
    rows = csv_rows(out)
    assert sorted((r["image"], r["folder"]) for r in rows) == [
        (str(photos / "face.jpg"), "face.jpg"), (str(photos / "face.png"), "face.png"),
        (str(photos / "solo.png"), "solo")]


def test_same_name_in_two_folders_mirrors_relative_paths(tmp_path, lm68):
    a = photo(tmp_path / "in" / "a", "face.png", lm68)
    b = photo(tmp_path / "in" / "b", "face.png", lm68)
    out = tmp_path / "out"
    r = run(a, b, "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    assert marker(out / "a" / "face.png", "face")["image"] == str(a)
    assert marker(out / "b" / "face.png", "face")["image"] == str(b)


def test_output_folder_rule():
    from face3dkit.pipeline import output_folders

    P = PurePosixPath
    got = output_folders([
        ("/d/face.jpg", "", "face.jpg"), ("/d/face.png", "", "face.png"),  # stem + extension
        ("/d/solo.png", "sub", "solo.png"),  # no collision: rel/stem
        ("/d/Case.png", "", "Case.png"), ("/d/case.png", "", "case.png"),  # differ only in case
        ("/x/array0.png", "", "array0.png"), ("array0", None, "array0"),  # a file named like an array
        ("/d/face.jpg", "", "face.jpg"),  # the same input twice shares its folder
    ])
    h = {k: __import__("hashlib").sha1(k.encode()).hexdigest()[:8] for k in ("/d/Case.png", "/d/case.png")}
    assert got == [P("face.jpg"), P("face.png"), P("sub/solo"), P(f"d/Case.png~{h['/d/Case.png']}"),
                   P(f"d/case.png~{h['/d/case.png']}"), P("array0.png"), P("array0"), P("face.jpg")]
    # deterministic: the same input set in another order gives each input the same folder
    inputs = [("/d/face.png", "", "face.png"), ("/d/face.jpg", "", "face.jpg")]
    assert output_folders(inputs) == [P("face.png"), P("face.jpg")]


# ------------------------------------------------------------------------------------------ summaries and resume


def test_summary_accumulates_across_resumes(tmp_path, lm68):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photo(photos, "a.png", lm68)
    photo(photos, "b.png", lm68)
    assert run(photos, "-o", out, *FAST).exit_code == 0
    first = {r["image"]: r for r in csv_rows(out)}
    assert len(first) == 2 and all(r["status"] == "ok" and r["finished_utc"] for r in first.values())

    r = run(photos, "-o", out, *FAST)  # all done: nothing fitted, the summary still lists both
    assert r.exit_code == 0 and "0 face(s) reconstructed" in r.output and "2 already done" in r.output
    again = {r["image"]: r for r in csv_rows(out)}
    assert again == first  # same rows, same settings fingerprint and finish times
    s = summary(out)
    assert s["faces"] == 0 and s["skipped_done"] == 2 and s["faces_total"] == 2
    fp = first[str(photos / "a.png")]["settings"]
    assert s["settings"][fp]["fit"]["landmark_iters"] == 2 and s["settings"][fp]["landmarks"] == "file"

    photo(photos, "c.png", lm68)  # a new image: fitted now, the two earlier ones kept
    r = run(photos, "-o", out, *FAST)
    assert r.exit_code == 0 and "1 face(s) reconstructed" in r.output
    rows = {r["image"]: r for r in csv_rows(out)}
    assert set(rows) == {str(photos / n) for n in ("a.png", "b.png", "c.png")}
    assert rows[str(photos / "a.png")] == first[str(photos / "a.png")]

    r = run(photos / "c.png", "-o", out, *FAST)  # a run on a subset keeps the other inputs' rows
    assert r.exit_code == 0
    assert {r["image"] for r in csv_rows(out)} >= {str(photos / "a.png"), str(photos / "b.png")}


def test_changed_settings_redo_keep_and_force(tmp_path, lm68):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photo(photos, "face.png", lm68)
    base = ["--landmarks", "file", "--iters", "0", "--no-progress", "--threads", "1"]
    assert run(photos, "-o", out, *base, "--landmark-iters", "2", "--save", "pose,lm").exit_code == 0
    face = out / "face"
    m1 = marker(face, "face")
    assert m1["settings"]["fit"]["landmark_iters"] == 2 and m1["save"] == ["pose", "lm"]
    assert (face / "face_lm68.txt").exists()

    # other settings, fewer outputs: redone; the marker tells the new settings; the stale lm file goes
    r = run(photos, "-o", out, *base, "--landmark-iters", "3", "--save", "pose")
    assert r.exit_code == 0 and "1 face(s) reconstructed" in r.output and "1 redone" in r.output, r.output
    m2 = marker(face, "face")
    assert m2["settings"]["fit"]["landmark_iters"] == 3 and m2["settings_fingerprint"] != m1["settings_fingerprint"]
    assert not (face / "face_lm68.txt").exists()
    row = csv_rows(out)[0]
    assert row["settings"] == m2["settings_fingerprint"]
    assert summary(out)["settings"][row["settings"]]["fit"]["landmark_iters"] == 3

    # same settings, outputs not saved before: redone to add them
    r = run(photos, "-o", out, *base, "--landmark-iters", "3", "--save", "pose,lm")
    assert "1 face(s) reconstructed" in r.output and (face / "face_lm68.txt").exists()
    # same settings, a subset of the outputs: done
    r = run(photos, "-o", out, *base, "--landmark-iters", "3", "--save", "lm")
    assert "0 face(s) reconstructed" in r.output and "1 already done" in r.output

    # --keep-changed: not redone, listed as kept with the settings it was made with
    stamp = (face / "face_pose.json").stat().st_mtime_ns
    r = run(photos, "-o", out, *base, "--landmark-iters", "4", "--contour", "3d", "--keep-changed")
    assert r.exit_code == 0 and "0 face(s) reconstructed" in r.output and "1 kept" in r.output, r.output
    assert (face / "face_pose.json").stat().st_mtime_ns == stamp
    row = csv_rows(out)[0]
    assert row["reason"].startswith("kept: made with other settings") and "fit.landmark_iters 3 -> 4" in row["reason"]
    assert "fit.contour_marching True -> False" in row["reason"]
    assert summary(out)["settings"][row["settings"]]["fit"]["landmark_iters"] == 3

    # --force: redone with unchanged settings
    r = run(photos, "-o", out, *base, "--landmark-iters", "3", "--force")
    assert "1 face(s) reconstructed" in r.output and (face / "face_pose.json").stat().st_mtime_ns != stamp


def test_marker_without_settings_is_redone(tmp_path, lm68):
    """A marker of an older version records no settings: they cannot be trusted to match."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photo(photos, "face.png", lm68)
    assert run(photos, "-o", out, *FAST).exit_code == 0
    mk = marker(out / "face", "face")
    old = {k: v for k, v in mk.items() if k not in ("settings", "settings_fingerprint", "save")}
    (out / "face" / "face.done.json").write_text(json.dumps(old))
    r = run(photos, "-o", out, *FAST)
    assert "1 face(s) reconstructed" in r.output and "1 redone" in r.output
    assert marker(out / "face", "face")["settings_fingerprint"] == mk["settings_fingerprint"]


def test_settings_fingerprint_follows_model_content(lm68):
    from face3dkit.fit import FitConfig
    from face3dkit.pipeline import ReconstructConfig, face_settings, settings_fingerprint

    m = face3dkit.load_model("default")
    cfg = ReconstructConfig(landmarks="file", fit=FitConfig(landmark_iters=2))
    fp = settings_fingerprint(face_settings(cfg, m))
    assert fp == settings_fingerprint(face_settings(ReconstructConfig(landmarks="file", device="cpu", threads=1,
                                                                      batch_size=3, fit=FitConfig(landmark_iters=2)),
                                                    m))  # device, threads, batch size: not settings of a face
    other = face3dkit.load_model("default")
    with torch.no_grad():
        other.mean_shape[0, 0] += 1e-3
    assert settings_fingerprint(face_settings(cfg, other)) != fp
    assert settings_fingerprint(face_settings(ReconstructConfig(landmarks="dlib", fit=cfg.fit), m)) != fp
    assert settings_fingerprint(face_settings(ReconstructConfig(landmarks="file", faces="all", fit=cfg.fit), m)) != fp


# ------------------------------------------------------------------------------------------ temporary files


def test_temp_files_of_a_killed_run_are_removed(tmp_path, lm68):
    from face3dkit.io.atomic import is_temp_name

    photos, out = tmp_path / "photos", tmp_path / "out"
    photo(photos, "face.png", lm68)
    face = out / "face"
    face.mkdir(parents=True)
    atomic_py = Path(face3dkit.__file__).parent / "io" / "atomic.py"
    kill = textwrap.dedent(f"""
        import importlib.util, os, signal
        spec = importlib.util.spec_from_file_location("atomic", {str(atomic_py)!r})
        atomic = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(atomic)  # the writer alone (standard library only): no torch import to wait for
        atomic_path = atomic.atomic_path
        open_writes = [atomic_path(final) for final in ({str(face / "face.png")!r}, {str(out / "summary.json")!r})]
        for ctx in open_writes:  # killed while both are being written
            ctx.__enter__().write_bytes(b"half written")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", kill], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    left = [p.name for p in face.iterdir()] + [p.name for p in out.iterdir() if p.is_file()]
    assert len(left) == 2 and all(is_temp_name(n) for n in left), left
    assert any(is_temp_name(n, "face.png") for n in left) and any(is_temp_name(n, "summary.json") for n in left)
    keep = [face / ".face.png.backup", face / "notes.f3dtmp", out / ".other.json.f3dtmp-abc123.json"]
    for k in keep:  # not ours (other names, or another process's file next to the summary)
        k.write_text("x")
    r = run(photos, "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in face.iterdir()) == [".face.png.backup", "face.done.json", "face_lm68.txt",
                                                       "face_pose.json", "notes.f3dtmp"]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [".other.json.f3dtmp-abc123.json",
                                                                      "summary.csv", "summary.json"]


def test_atomic_writers_use_the_temp_pattern(tmp_path):
    from face3dkit.io.atomic import TEMP_MARK, atomic_path, is_temp_name
    from face3dkit.model.files import _atomic_write

    with atomic_path(tmp_path / "x.obj") as tmp:
        assert tmp.parent == tmp_path and is_temp_name(tmp.name, "x.obj") and tmp.suffix == ".obj"
    seen = []
    _atomic_write(tmp_path / "m.npz", lambda f: seen.extend(p.name for p in tmp_path.iterdir() if TEMP_MARK in p.name))
    assert len(seen) == 1 and is_temp_name(seen[0], "m.npz")
    assert not is_temp_name("face.png") and not is_temp_name(".face.png.tmp") and not is_temp_name("x.f3dtmp-1")


# ------------------------------------------------------------------------------------------ failures are reported


def test_broken_link_and_unreadable_folder_are_failures(tmp_path, lm68, monkeypatch):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photo(photos, "good.png", lm68)
    (photos / "gone.png").symlink_to(photos / "deleted.png")
    (photos / "notes.txt").symlink_to(photos / "nowhere.txt")  # not an image name: not an input
    locked = photos / "locked"
    photo(locked, "x.png", lm68)
    if os.geteuid() == 0:  # root reads any folder: make this one fail to list as it would for a user
        import face3dkit.io.image as image_mod

        real = image_mod.os.scandir

        def scandir(path):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(image_mod.os, "scandir", scandir)
    else:
        locked.chmod(0)
    try:
        r = run(photos, "-o", out, *FAST)
    finally:
        locked.chmod(0o755)
    assert r.exit_code == 1, r.output
    assert "1 face(s) reconstructed from 3 image(s)" in r.output and "2 failed" in r.output
    failed = {f["image"]: f["reason"] for f in summary(out)["failures"]}
    assert set(failed) == {str(photos / "gone.png"), str(locked)}
    gone = failed[str(photos / "gone.png")]
    assert "broken symbolic link" in gone and "deleted.png" in gone
    assert "folder not readable" in failed[str(locked)] and "ermission denied" in failed[str(locked)]
    statuses = {r["image"]: (r["status"], r["reason"]) for r in csv_rows(out)}
    assert statuses[str(photos / "good.png")] == ("ok", "")
    assert statuses[str(photos / "gone.png")][0] == "failed" and statuses[str(locked)][0] == "failed"
    assert f"failed: {photos / 'gone.png'}: broken symbolic link" in r.output


def test_missing_path_fails_alone(tmp_path, lm68):
    a = photo(tmp_path / "p", "a.png", lm68)
    b = photo(tmp_path / "p", "b.png", lm68)
    out = tmp_path / "out"
    r = run(a, tmp_path / "nope.png", b, "-o", out, *FAST)
    assert r.exit_code == 1, r.output
    assert "2 face(s) reconstructed from 3 image(s)" in r.output and "1 failed" in r.output
    assert marker(out / "a", "a")["image"] == str(a) and marker(out / "b", "b")["image"] == str(b)
    assert summary(out)["failures"][0]["image"] == str(tmp_path / "nope.png")
    assert summary(out)["failures"][0]["reason"] == "no such file or folder"


def test_missing_file_in_a_list_fails_alone(tmp_path, lm68):
    a = photo(tmp_path / "p", "a.png", lm68)
    lst = tmp_path / "inputs.txt"
    lst.write_text(f"{a}\np/gone.png\n")
    out = tmp_path / "out"
    r = run(lst, "-o", out, *FAST)
    assert r.exit_code == 1 and "1 face(s) reconstructed from 2 image(s)" in r.output, r.output
    (f,) = summary(out)["failures"]
    assert f["image"] == str(tmp_path / "p" / "gone.png") and f["reason"] == f"no such image file (line 2 of {lst})"


def test_python_api_missing_and_bad_config(tmp_path, lm68):
    from face3dkit.fit import FitConfig
    from face3dkit.pipeline import ReconstructConfig

    a = photo(tmp_path, "a.png", lm68)
    cfg = ReconstructConfig(landmarks="file", threads=1, fit=FitConfig(landmark_iters=2, photo_iters=0))
    s = face3dkit.reconstruct([a, tmp_path / "missing"], None, cfg)
    assert len(s.results) == 1 and [f.image for f in s.failures] == [str(tmp_path / "missing")]
    for bad in (ReconstructConfig(batch_size=0), ReconstructConfig(threads=-1),
                ReconstructConfig(fit=FitConfig(photo_iters=-1)), ReconstructConfig(save=("obj", "bogus")),
                ReconstructConfig(texture_size=8)):
        with pytest.raises(ValueError, match="ReconstructConfig"):
            face3dkit.reconstruct([a], None, bad)


# ------------------------------------------------------------------------------------------ options, devices, threads


@pytest.mark.parametrize("option, value", [("--iters", "-1"), ("--landmark-iters", "-3"), ("--batch-size", "0"),
                                           ("--threads", "0"), ("--seed", "-1"), ("--iters", "many"),
                                           ("--landmark-weight", "0"), ("--landmark-weight", "-1e-3")])
def test_numeric_options_are_checked(tmp_path, option, value):
    r = run(tmp_path, "-o", tmp_path / "o", option, value)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{option}'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_model_command_sizes_are_checked(tmp_path):
    r = CliRunner().invoke(main, ["model", "sample", "--out", str(tmp_path / "f.obj"), "--texture-size", "0"])
    assert r.exit_code == 2 and "Invalid value for '--texture-size'" in r.output


def test_device_cuda_without_cuda_is_a_usage_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = run(tmp_path, "-o", tmp_path / "o", "--device", "cuda")
    assert r.exit_code == 2 and "Traceback" not in r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(line) == 1 and "--device" in line[0] and "CUDA" in line[0]
    r = run(tmp_path, "-o", tmp_path / "o", "--device", "warp-drive")
    assert r.exit_code == 2 and "unknown device" in r.output
    from face3dkit.runtime import DeviceUnavailableError, resolve_device

    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceUnavailableError):
        resolve_device("cuda:0")


@pytest.mark.cuda
def test_device_auto_picks_cuda_when_present():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from face3dkit.runtime import DeviceUnavailableError, resolve_device

    assert resolve_device("auto").type == "cuda" and resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceUnavailableError, match="only"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_readme_python_quick_start_runs_here():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Python quick start\s+```python\n(.*?)```", readme, re.S)
    assert block is not None
    torch.set_num_threads(1)  # restored by _keep_torch_threads
    exec(compile(block.group(1), "README.md quick start", "exec"), {})


def test_default_threads_physical_cores_quota_and_ranks(tmp_path, monkeypatch):
    from face3dkit import runtime

    sysfs = tmp_path / "cpu"
    # 4 logical CPUs, 2 cores with 2 hyper-threads each; cpu4 has no topology (counts alone)
    for cpu, (pkg, core) in {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)}.items():
        topo = sysfs / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{pkg}\n")
        (topo / "core_id").write_text(f"{core}\n")
    assert runtime.physical_cores([0, 1, 2, 3], sysfs) == 2
    assert runtime.physical_cores([0, 2], sysfs) == 1  # the affinity holds one core's two threads
    assert runtime.physical_cores([0, 1, 4], sysfs) == 3
    cg = tmp_path / "cg"
    cg.mkdir()
    assert runtime.cgroup_cpu_limit(cg) is None
    (cg / "cpu.max").write_text("150000 100000\n")
    assert runtime.cgroup_cpu_limit(cg) == 1.5
    (cg / "cpu.max").write_text("max 100000\n")
    assert runtime.cgroup_cpu_limit(cg) is None

    monkeypatch.setattr(runtime, "physical_cores", lambda: 8)
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (6.0, 5.0, 4.0))
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert runtime.busy_fraction() == 6.0 / 16
    assert runtime.default_threads() == 8
    assert runtime.default_threads(load_aware=True) == 5  # 8 * (1 - 6/16) = 5
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (40.0, 5.0, 4.0))
    assert runtime.busy_fraction() == 1.0 and runtime.default_threads(load_aware=True) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # torchrun --nproc-per-node 3: no oversubscription
    assert runtime.default_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert runtime.default_threads() == 1
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda: 2.5)  # docker --cpus 2.5
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert runtime.default_threads() == 3
    if hasattr(os, "sched_getaffinity"):
        assert runtime.available_cpus() == sorted(os.sched_getaffinity(0))


def test_threads_are_set_during_the_run_and_restored(tmp_path, lm68):
    import face3dkit.pipeline.run as run_mod
    from face3dkit.fit import FitConfig
    from face3dkit.pipeline import ReconstructConfig

    a = photo(tmp_path, "a.png", lm68)
    seen = []
    real = run_mod._fit_batch

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    torch.set_num_threads(2)
    try:
        run_mod._fit_batch = spy
        s = face3dkit.reconstruct([a], None, ReconstructConfig(landmarks="file", threads=1,
                                                               fit=FitConfig(landmark_iters=2, photo_iters=0)))
        assert seen == [1] and s.threads == 1 and torch.get_num_threads() == 2
        s = face3dkit.reconstruct([a], None, ReconstructConfig(landmarks="file", threads=0,
                                                               fit=FitConfig(landmark_iters=2, photo_iters=0)))
        assert seen == [1, 2] and s.threads == 2  # 0: torch's setting left as it is
    finally:
        run_mod._fit_batch = real
    r = run(a, "-o", tmp_path / "o", *FAST)  # FAST ends with --threads 1
    assert r.exit_code == 0 and "1 thread(s)" in r.output
    assert summary(tmp_path / "o")["threads"] == 1 and summary(tmp_path / "o")["device"] == "cpu"
