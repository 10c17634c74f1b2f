"""face3dkit.align: Deng et al.'s POS crop as an affine map, warping, templates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import face3dkit
from face3dkit.align import (
    TemplateError,
    align_image,
    alignment_transform,
    apply_affine,
    default_template,
    invert_affine,
    load_deng_template,
    template_5p_from_model,
    warp_affine,
)
from face3dkit.landmarks import FaceLandmarks, lm68_to_lm5

# A non-planar 5-point template (model units, +y up, +z toward the camera).
TEMPLATE = torch.tensor([[-0.31, 0.29, 0.13], [0.31, 0.29, 0.13], [0.0, 0.03, 0.6],
                         [-0.25, -0.33, 0.2], [0.25, -0.33, 0.2]], dtype=torch.float64)


def _project(template: torch.Tensor, s: float, theta: float, c: tuple[float, float]) -> torch.Tensor:
    """Image points of the template under scaled orthography: y flipped to image-down, rotated by
    ``theta`` (image coordinates), scaled by ``s`` px/unit, origin at ``c``."""
    xy = torch.stack([template[:, 0], -template[:, 1]], -1)
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    return s * xy @ rot.T + torch.tensor(c, dtype=torch.float64)


@pytest.mark.parametrize("theta", [0.0, 0.35])
def test_transform_recovers_known_similarity(theta: float) -> None:
    s, c = 173.0, (310.0, 205.5)
    lm5 = _project(TEMPLATE, s, theta, c)
    k = 102.0 / s  # crop px per image px
    # Deng et al.: scale + translation only, template origin -> crop centre
    tr = alignment_transform(lm5, TEMPLATE, target_size=224, rescale_factor=102.0)
    expected = torch.tensor([[k, 0.0, 112.0 - k * c[0]], [0.0, k, 112.0 - k * c[1]]], dtype=torch.float64)
    torch.testing.assert_close(tr.matrix[0], expected, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(tr.scale[0], torch.tensor(k, dtype=torch.float64))
    torch.testing.assert_close(tr.pos_scale[0], torch.tensor(s, dtype=torch.float64))
    # upright: the rotation is removed too, so the crop shows the template frontal and level
    up = alignment_transform(lm5, TEMPLATE, target_size=224, rescale_factor=102.0, upright=True)
    torch.testing.assert_close(up.angle[0], torch.tensor(theta, dtype=torch.float64), atol=1e-9, rtol=0)
    frontal = _project(TEMPLATE, 102.0, 0.0, (112.0, 112.0))
    torch.testing.assert_close(apply_affine(lm5, up.matrix[0]), frontal, atol=1e-8, rtol=0)
    # crop -> image -> crop is the identity
    q = torch.rand(10, 2, dtype=torch.float64) * 224
    for m in (tr.matrix[0], up.matrix[0]):
        torch.testing.assert_close(apply_affine(apply_affine(q, invert_affine(m)), m), q)


def test_align_image_numpy_roundtrip_and_fields() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    lm68 = rng.uniform(120, 220, (68, 2))
    al = align_image(photo, lm68, TEMPLATE)
    assert isinstance(al.image, np.ndarray) and al.image.dtype == np.uint8 and al.image.shape == (224, 224, 3)
    assert al.matrix.shape == (2, 3) and al.inverse.shape == (2, 3) and al.landmarks.shape == (68, 2)
    assert al.lm5.shape == (5, 2) and al.size == 224 and al.scale.ndim == 0
    pts = rng.uniform(0, 400, (7, 2))
    back = al.crop_to_image(al.image_to_crop(pts))
    assert isinstance(back, np.ndarray)
    np.testing.assert_allclose(back, pts, atol=1e-9)
    np.testing.assert_allclose(al.crop_to_image(al.landmarks.numpy()), lm68, atol=1e-9)
    np.testing.assert_allclose(al.lm5.numpy(), al.image_to_crop(lm68_to_lm5(lm68)), atol=1e-9)
    # 68 points and their 5-point reduction give the same crop
    al5 = align_image(photo, lm68_to_lm5(lm68), TEMPLATE)
    torch.testing.assert_close(al5.matrix, al.matrix)
    np.testing.assert_array_equal(al5.image, al.image)
    # FaceLandmarks input
    fl = FaceLandmarks(points=lm68, box=FaceLandmarks.box_of(lm68))
    torch.testing.assert_close(align_image(photo, fl, TEMPLATE).matrix, al.matrix)


def _ramp(h: int, w: int) -> torch.Tensor:
    """(1, h, w, 3) float image linear in the pixel-centre coordinates (bilinear-exact)."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    return torch.stack([x / w, y / h, 0.3 * x / w + 0.5 * y / h], -1)[None]


@pytest.mark.parametrize("scale", [1.7, 0.9, 0.3])
def test_warp_samples_the_right_place(scale: float) -> None:
    """Warping a linear ramp must give the ramp's value at matrix^-1 of each crop pixel centre
    (exact for bilinear sampling and for the antialiased pre-reduction away from borders)."""
    h, w = 400, 500
    img = _ramp(h, w)
    ang = 0.2
    a = scale * torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]], dtype=torch.float64)
    centre = torch.tensor([260.0, 190.0], dtype=torch.float64)
    m = torch.cat([a, (32.0 - a @ centre)[:, None]], -1)  # centre -> crop (32, 32)
    out = warp_affine(img, m[None], 64)
    yy, xx = torch.meshgrid(torch.arange(64, dtype=torch.float64) + 0.5, torch.arange(64, dtype=torch.float64) + 0.5,
                            indexing="ij")
    src = apply_affine(torch.stack([xx, yy], -1).reshape(-1, 2), invert_affine(m)).reshape(64, 64, 2)
    sx, sy = src[..., 0], src[..., 1]
    expected = torch.stack([sx / w, sy / h, 0.3 * sx / w + 0.5 * sy / h], -1)
    torch.testing.assert_close(out[0], expected, atol=2e-3, rtol=0)
    out_u8 = warp_affine((img * 255).round().to(torch.uint8), m, 64)
    assert out_u8.dtype == torch.uint8
    assert (out_u8[0].double() - expected * 255).abs().max() <= 2.0


def test_warp_outside_photo_is_black_and_antialias_smooths() -> None:
    img = torch.full((1, 50, 50, 3), 200, dtype=torch.uint8)
    m = torch.tensor([[[1.0, 0.0, 30.0], [0.0, 1.0, 30.0]]], dtype=torch.float64)  # photo at crop [30, 80)
    out = warp_affine(img, m, 100)
    assert out[0, :29, :].max() == 0 and out[0, 31:79, 31:79].min() == 200
    # a 1-px checkerboard shrunk 7.3x: antialiased -> uniform grey, plain bilinear -> aliasing
    yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
    checker = (((yy + xx) % 2) * 255).to(torch.uint8)[None, ..., None].expand(1, 512, 512, 3)
    m7 = torch.tensor([[[1 / 7.3, 0.0, 0.0], [0.0, 1 / 7.3, 0.0]]], dtype=torch.float64)
    smooth = warp_affine(checker, m7, 64).double()
    assert (smooth[0, 4:-4, 4:-4] - 127.5).abs().max() < 4.0
    aliased = warp_affine(checker, m7, 64, antialias=False).double()
    assert (aliased[0, 4:-4, 4:-4] - 127.5).abs().max() > 50.0


def test_batched_faces_and_images() -> None:
    rng = np.random.default_rng(1)
    photo = torch.from_numpy(rng.random((200, 260, 3))).float()
    lms = torch.stack([_project(TEMPLATE, 60.0, 0.0, (80.0, 90.0)), _project(TEMPLATE, 90.0, 0.1, (170.0, 110.0))])
    al = align_image(photo, lms, TEMPLATE, target_size=112, rescale_factor=51.0)
    assert isinstance(al.image, torch.Tensor) and al.image.shape == (2, 112, 112, 3)
    assert al.image.dtype == torch.float32 and al.matrix.shape == (2, 2, 3) and al.landmarks.shape == (2, 5, 2)
    for i in range(2):
        one = align_image(photo, lms[i], TEMPLATE, target_size=112, rescale_factor=51.0)
        torch.testing.assert_close(one.matrix, al.matrix[i])
        torch.testing.assert_close(one.image, al.image[i])
        torch.testing.assert_close(one.center, al.center[i])
    batch = torch.stack([photo, photo.flip(0)])
    alb = align_image(batch, lms, TEMPLATE, target_size=112, rescale_factor=51.0)
    torch.testing.assert_close(alb.image[0], al.image[0])
    torch.testing.assert_close(alb.crop_to_image(alb.landmarks), lms)


# Deng et al.'s 5-point POS alignment of a turned face is exact only up to the perspective of the
# landmarks' depth around the model origin: measured mean/max errors 1.2/2.3 px for the MakeHuman
# model (origin = centroid of the head front), 1.6/2.9 px and a 2 % scale error for the default
# model (origin = centroid of the narrow face area, as BFM's front region).
@pytest.mark.parametrize("name,mean_px,max_px,scale_tol", [("makehuman", 1.5, 2.5, 0.01), ("default", 2.0, 3.5, 0.015)])
def test_rendered_face_crop_matches_reference_camera(name, mean_px, max_px, scale_tol) -> None:
    """A photo of a model taken with another camera (larger, off-centre) aligns to what Deng et
    al.'s reconstruction camera sees for the same face at trans = 0 (the crop convention the
    fitting relies on): landmarks within ~2 px, pixels close."""
    from face3dkit.viz import render_faces

    model = face3dkit.load_model(name)
    c = model.sample(1, generator=torch.Generator().manual_seed(3))
    c.angles[0] = torch.tensor([0.1, 0.3, 0.15])
    ref_cam = face3dkit.PerspectiveCamera()
    ref_lm = model(c, camera=ref_cam).landmarks2d[0].double()
    cam = face3dkit.PerspectiveCamera(focal=1015 * 1.7, cx=260.0, cy=300.0, image_size=(480, 640))
    photo = render_faces(model, c, background=0.5, camera=cam)[0]
    lm = model(c, camera=cam).landmarks2d[0].double().numpy()
    al = align_image(photo, lm, model)  # the model's own template, 224, 102
    err = (al.landmarks - ref_lm).norm(dim=-1)
    assert err.mean() < mean_px and err.max() < max_px, (err.mean(), err.max())
    assert abs(float(al.scale) - 1.0 / 1.7) < scale_tol
    ref = render_faces(model, c, size=224, background=0.5, camera=ref_cam)[0]
    # rows >= 200 of the crop fall below the photo (black padding), so compare above them
    assert np.abs(al.image.astype(float) - ref.astype(float))[:200].mean() < 8.0
    # Deng-like framing: eyes ~40% from the top
    eyes = lm68_to_lm5(al.landmarks)[:2]
    assert 0.33 < float(eyes[:, 1].mean()) / 224 < 0.45


def test_templates(tmp_path: Path) -> None:
    from scipy.io import savemat

    lm = np.random.default_rng(2).normal(0, 0.5, (68, 3))
    savemat(tmp_path / "similarity_Lm3D_all.mat", {"lm": lm})
    t = load_deng_template(tmp_path / "similarity_Lm3D_all.mat")
    idx = np.array([31, 37, 40, 43, 46, 49, 55]) - 1  # Deng et al.'s load_lm3d, re-typed
    ref = np.stack([lm[idx[0]], lm[idx[[1, 2]]].mean(0), lm[idx[[3, 4]]].mean(0), lm[idx[5]], lm[idx[6]]])
    ref = ref[[1, 2, 0, 3, 4]]
    np.testing.assert_allclose(t.numpy(), ref)
    savemat(tmp_path / "bad.mat", {"other": lm})
    for bad in (tmp_path / "bad.mat", tmp_path / "missing.mat"):
        with pytest.raises(TemplateError) as err:
            load_deng_template(bad)
        assert "\n" not in str(err.value) and str(bad) in str(err.value)
    (tmp_path / "junk.mat").write_bytes(b"garbage" * 10)
    with pytest.raises(TemplateError):
        load_deng_template(tmp_path / "junk.mat")
    # the model template: mean-shape landmark vertices reduced to 5 points
    model = face3dkit.load_model("default")
    mt = template_5p_from_model(model)
    v = model.mean_shape.reshape(-1, 3)[model.landmark_idx].double()
    torch.testing.assert_close(mt.double()[0], (v[36] + v[39]) / 2)
    torch.testing.assert_close(mt.double()[2], v[30])
    torch.testing.assert_close(default_template(), mt.double())
    # path and model templates are accepted by align_image
    photo = np.zeros((100, 100, 3), np.uint8)
    lm5 = _project(torch.from_numpy(ref), 40.0, 0.0, (50.0, 50.0)).numpy()
    al = align_image(photo, lm5, tmp_path / "similarity_Lm3D_all.mat")
    np.testing.assert_allclose(al.center.numpy(), [50.0, 50.0], atol=1e-9)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_align_on_cuda_matches_cpu() -> None:
    photo = torch.rand(2, 240, 320, 3)
    lms = torch.stack([_project(TEMPLATE, 70.0, 0.1, (120.0, 110.0)), _project(TEMPLATE, 200.0, -0.1, (170.0, 120.0))])
    cpu = align_image(photo, lms, TEMPLATE)
    gpu = align_image(photo.cuda(), lms.cuda(), TEMPLATE)
    assert gpu.image.is_cuda and gpu.matrix.is_cuda
    torch.testing.assert_close(gpu.matrix.cpu(), cpu.matrix)
    torch.testing.assert_close(gpu.image.cpu(), cpu.image, atol=1e-4, rtol=0)
