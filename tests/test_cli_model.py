"""`face3dkit model ...` commands: outputs written, bad input -> one line + non-zero exit."""

import json
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner
from PIL import Image
from test_bfm import write_inputs

from face3dkit._cli.face3dkit_cmd import main


@pytest.fixture()
def runner():
    return CliRunner()


def one_line_error(result) -> str:
    lines = [ln for ln in result.output.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_info_default(runner):
    r = runner.invoke(main, ["model", "info", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    n_id, n_exp, n_tex = (info["layout"][k][1] - info["layout"][k][0] for k in ("id", "exp", "tex"))
    assert info["coefficients"] == n_id + n_exp + n_tex + 33
    assert info["layout"]["trans"][1] == info["coefficients"]
    assert "jawOpen" in info["expression_names"] and "MIT" in info["licence"] and "CC0" in info["licence"]
    assert info["regions"]["teeth"] > 0 and info["coefficients"] == 100 + 53 + 19 + 33
    r = runner.invoke(main, ["model", "info"])
    assert r.exit_code == 0 and "coefficients" in r.output


def test_sample_writes_textured_obj_and_preview(runner, tmp_path):
    out = tmp_path / "face.obj"
    r = runner.invoke(main, ["model", "sample", "--seed", "2", "--exp", "jawOpen=0.5", "--out", str(out),
                             "--texture-size", "256"])
    assert r.exit_code == 0, r.output
    for name in ("face.obj", "face.mtl", "face_texture.png", "face.png"):
        assert (tmp_path / name).exists(), name
    assert "map_Kd face_texture.png" in (tmp_path / "face.mtl").read_text()
    mesh = trimesh.load(out, process=False)
    import face3dkit

    m = face3dkit.load_model("default")
    assert len(mesh.faces) == m.n_faces
    assert mesh.visual.uv is not None and len(mesh.visual.uv) == len(mesh.vertices)
    tex = np.asarray(Image.open(tmp_path / "face_texture.png"))
    assert tex.shape == (256, 256, 3) and tex.std() > 5
    prev = np.asarray(Image.open(tmp_path / "face.png"))
    assert prev.shape == (512, 512, 3)
    assert (prev.reshape(-1, 3) != 255).any(1).mean() > 0.2  # a face covers the preview


def test_sample_vertex_colours_for_ply(runner, tmp_path):
    out = tmp_path / "face.ply"
    r = runner.invoke(main, ["model", "sample", "--mean", "--out", str(out), "--no-preview"])
    assert r.exit_code == 0, r.output
    mesh = trimesh.load(out, process=False)
    assert mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
    assert not (tmp_path / "face.png").exists()


@pytest.mark.parametrize("args,needle", [
    (["--exp", "bogus=1"], "unknown expression unit"),
    (["--exp", "mouth-open"], "NAME=WEIGHT"),
])
def test_sample_bad_expression(runner, tmp_path, args, needle):
    r = runner.invoke(main, ["model", "sample", *args, "--out", str(tmp_path / "f.obj")])
    assert r.exit_code == 2 and needle in one_line_error(r)


def test_bad_model_files(runner, tmp_path):
    txt = tmp_path / "notes.mat"
    txt.write_text("hello\n")
    trunc = tmp_path / "cut.npz"
    import face3dkit

    face3dkit.save_model(face3dkit.load_model("default"), trunc)
    trunc.write_bytes(trunc.read_bytes()[:5000])
    for path in (txt, trunc, tmp_path / "missing.npz"):
        for cmd in (["model", "info", str(path)], ["model", "sample", "--model", str(path), "--out",
                                                    str(tmp_path / "x.obj")]):
            r = runner.invoke(main, cmd)
            assert r.exit_code == 1, (cmd, r.output)
            assert str(path) in one_line_error(r)


def test_convert_bfm(runner, tmp_path):
    write_inputs(tmp_path)
    out = tmp_path / "front.mat"
    args = ["model", "convert-bfm", str(tmp_path / "01_MorphableModel.mat"), str(tmp_path / "Exp_Pca.bin"),
            "--aux", str(tmp_path / "aux"), "-o", str(out), "--n-id", "5", "--n-exp", "4", "--n-tex", "3"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["model", "info", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["coefficients"] == 5 + 4 + 3 + 33
    (tmp_path / "aux" / "std_exp.txt").unlink()
    r = runner.invoke(main, args)
    assert r.exit_code == 1 and "std_exp.txt" in one_line_error(r)


def test_console_script_installed():
    r = subprocess.run([sys.executable, "-m", "face3dkit._cli.face3dkit_cmd", "model", "info", "/nonexistent.mat"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "nonexistent" in r.stderr
