"""Fitting and `face3dkit reconstruct` with a model given as Deng et al.'s BFM_model_front.mat.

The Basel Face Model cannot be shipped or downloaded, so the test writes a file in the exact
layout of Deng et al.'s ``BFM_model_front.mat`` (interleaved xyz rows, 1-based float indices,
0-255 albedo, point_buf, keypoints, front and skin masks) from the default model's arrays, and
checks that the whole path (loader → fit → CLI outputs) recovers a known pose through it.
"""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.io import loadmat, savemat

import face3dkit
from face3dkit.fit import FitConfig, fit
from face3dkit.geometry import PerspectiveCamera
from face3dkit.model.files import detect_format
from face3dkit.viz import render_faces, save_png


def write_bfm_front(model: face3dkit.MorphableModel, path) -> None:
    """The model's arrays in Deng et al.'s BFM_model_front.mat layout."""
    n = model.n_verts
    f = model.n_faces

    def rows(basis: torch.Tensor) -> np.ndarray:  # (N, 3, K) -> (3N, K), rows x0 y0 z0 x1 ...
        return basis.numpy().reshape(3 * n, -1)

    vf = model.vertex_faces.numpy()
    point_buf = np.where(vf >= 0, vf + 1, f + 1).astype(np.float64)
    front = np.nonzero(model.front_mask.numpy())[0]
    savemat(path, {
        "meanshape": (model.mean_shape.numpy() + np.array([0.0, 0.0, 0.4])).reshape(1, -1),  # off-centre
        "idBase": rows(model.id_basis).astype(np.float32),
        "exBase": rows(model.exp_basis),
        "meantex": (model.mean_albedo.numpy() * 255).reshape(1, -1).astype(np.float32),
        "texBase": (rows(model.albedo_basis) * 255).astype(np.float32),
        "tri": (model.faces.numpy() + 1).astype(np.float64),
        "point_buf": point_buf,
        "keypoints": (model.landmark_idx.numpy() + 1).astype(np.float64)[None],
        "frontmask2_idx": (front + 1).astype(np.float64)[:, None],
        "tri_mask2": (model.front_faces.numpy() + 1).astype(np.float64),
        "skinmask": model.skin_mask.numpy().astype(np.float64)[None],
    })


@pytest.fixture(scope="module")
def bfm(tmp_path_factory):
    path = tmp_path_factory.mktemp("bfm") / "BFM_model_front.mat"
    write_bfm_front(face3dkit.load_model("default"), path)
    return path


def test_bfm_file_loads_as_deng_layout(bfm):
    assert detect_format(bfm) == "mat"
    m = face3dkit.load_model(bfm)
    raw = loadmat(bfm)
    assert (m.n_id, m.n_exp, m.n_tex) == (raw["idBase"].shape[1], raw["exBase"].shape[1], raw["texBase"].shape[1])
    assert m.exp_range is None  # Deng's files carry no expression range
    # Re-centred like Deng et al.: the loaded mean is the file's mean minus its centroid.
    mean = raw["meanshape"].reshape(-1, 3)
    np.testing.assert_allclose(m.mean_shape.numpy(), mean - mean.mean(0), atol=1e-5)


def test_fit_recovers_pose_with_a_bfm_file(bfm):
    m = face3dkit.load_model(bfm)
    yaws = torch.tensor([-30.0, 20.0])
    g = torch.Generator().manual_seed(3)
    c = m.sample(2, generator=g, id_scale=0.7, tex_scale=0.7)
    c.exp.zero_()
    c.angles[:, 1] = yaws * math.pi / 180
    c.angles[:, 0] = -0.1
    c.gamma[:, [2, 11, 20]] = 0.25
    cam = PerspectiveCamera.for_image_size(112)
    img = torch.as_tensor(render_faces(m, c, camera=cam, background=0.4)).float() / 255
    with torch.no_grad():
        lm = m(c, camera=cam).landmarks2d
    cfg = FitConfig(landmark_iters=80, photo_iters=3, contour_marching=False, contour_tangent_weight=1.0)
    res = fit(m, img, lm, cfg, camera=cam)
    err = (res.coeffs.angles - c.angles).abs() * 180 / math.pi
    assert err[:, 1].max() < 3.0, err
    assert err[:, 0].max() < 4.0, err
    assert res.landmark_error.max() < 1.5


def test_cli_reconstruct_with_a_bfm_file(bfm, tmp_path):
    from face3dkit._cli.face3dkit_cmd import main

    m = face3dkit.load_model(bfm)
    c = face3dkit.Coefficients.zeros(m.layout, 1)
    c.angles[0, 1] = math.radians(25)
    c.gamma[:, [2, 11, 20]] = 0.3
    size = 256
    cam = PerspectiveCamera(focal=1015.0 * size / 224, cx=size / 2, cy=size / 2, image_size=size)
    imgs = tmp_path / "in"
    imgs.mkdir()
    save_png(render_faces(m, c, camera=cam, background=0.5)[0], imgs / "face.png")
    with torch.no_grad():
        lm = m(c, camera=cam).landmarks2d[0].numpy()
    np.save(imgs / "face.npy", lm)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["reconstruct", str(imgs), "-o", str(out), "--model", str(bfm),
                                  "--landmarks", "file", "--contour", "3d", "--iters", "3",
                                  "--landmark-iters", "80", "--no-progress", "--save", "mat,lm,pose"])
    assert r.exit_code == 0, r.output
    pose = json.loads((out / "face" / "face_pose.json").read_text())
    assert abs(pose["yaw"] - 25) < 3, pose
    mat = loadmat(out / "face" / "face.mat")
    assert mat["id"].shape == (1, m.n_id) and mat["exp"].shape == (1, m.n_exp)
    lm_fit = np.loadtxt(out / "face" / "face_lm68.txt")
    assert np.abs(lm_fit - lm).mean() < 2.0  # pixels in the original image
