"""MeshRenderer / MeshRasterizer modules and save_image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from face3dkit.render import MeshRasterizer, MeshRenderer, interpolate, rasterize, save_image


class TinyCamera:
    """Local pinhole camera with Deng et al.'s conventions (camera on +z looking to -z, y down)."""

    def __init__(self, focal=60.0, size=(32, 40), distance=5.0):
        self.focal = focal
        self.image_size = size
        self.distance = distance

    def to_screen(self, p: torch.Tensor) -> torch.Tensor:
        H, W = self.image_size
        d = self.distance - p[..., 2]
        return torch.stack([W / 2 + self.focal * p[..., 0] / d, H / 2 - self.focal * p[..., 1] / d, d], -1)


def quad(cx=0.0, cy=0.0, z=0.0, s=0.5, dtype=torch.float64):
    """Square of two triangles, counter-clockwise seen from +z."""
    v = torch.tensor([[-s, -s, 0.0], [s, -s, 0.0], [s, s, 0.0], [-s, s, 0.0]], dtype=dtype)
    return v + torch.tensor([cx, cy, z], dtype=dtype), torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_image_orientation_x_right_y_up():
    cam = TinyCamera()
    r = MeshRenderer(cam)
    v_right, faces = quad(cx=1.0, s=0.3)
    v_up, _ = quad(cy=1.0, s=0.3)
    col = torch.ones(1, 4, 3, dtype=torch.float64)
    right = r(v_right[None], col, faces).mask[0, ..., 0]
    up = r(v_up[None], col, faces).mask[0, ..., 0]
    H, W = cam.image_size
    cols = right.nonzero()[:, 1]
    rows = up.nonzero()[:, 0]
    assert cols.numel() > 0 and bool((cols >= W // 2).all())  # +x: image right
    assert rows.numel() > 0 and bool((rows < H // 2).all())  # +y: image top (y down)


def test_outputs_match_functional_pipeline():
    cam = TinyCamera()
    v, faces = quad(s=0.6)
    v = torch.stack([v, v * 0.8 + torch.tensor([0.2, 0.1, 0.5], dtype=torch.float64)])
    col = torch.rand(2, 4, 3, dtype=torch.float64)
    bg = torch.rand(2, 32, 40, 3, dtype=torch.float64)
    out = MeshRenderer(cam, faces)(v, col, background=bg)
    screen = cam.to_screen(v)
    frags = rasterize(screen, faces, cam.image_size)
    ref = interpolate(col, frags, faces, verts=screen)
    m = frags.mask[..., None]
    torch.testing.assert_close(out.image, torch.where(m, ref, bg))
    torch.testing.assert_close(out.mask, m.double())
    torch.testing.assert_close(out.depth[..., 0], torch.where(frags.mask, frags.zbuf, 0.0))
    assert out.region_mask is None
    assert torch.equal(out.fragments.pix_to_face, frags.pix_to_face)
    assert out.image.shape == (2, 32, 40, 3) and out.mask.shape == (2, 32, 40, 1)


def test_region_masks_faces_and_vertices():
    cam = TinyCamera()
    v, faces = quad(s=0.6)
    col = torch.ones(1, 4, 3, dtype=torch.float64)
    by_face = MeshRenderer(cam, faces, region_faces=torch.tensor([1]))(v[None], col)
    fi = by_face.fragments.face_index[0]
    torch.testing.assert_close(by_face.region_mask[0, ..., 0], (fi == 1).double())
    assert 0 < by_face.region_mask.sum() < by_face.mask.sum()
    by_vert = MeshRenderer(cam, faces, region_vertices=torch.tensor([0, 2, 3]))(v[None], col)
    torch.testing.assert_close(by_vert.region_mask, by_face.region_mask)
    boolmask = MeshRenderer(cam, faces, region_faces=torch.tensor([False, True]))(v[None], col)
    torch.testing.assert_close(boolmask.region_mask, by_face.region_mask)
    # A sub-mesh as vertex triples (Deng et al.'s front_face_buf), corners in another order.
    triples = MeshRenderer(cam, faces, region_faces=faces[1:].roll(1, -1))(v[None], col)
    torch.testing.assert_close(triples.region_mask, by_face.region_mask)
    with pytest.raises(ValueError):
        MeshRenderer(cam, faces, region_faces=torch.tensor([1]), region_vertices=torch.tensor([0]))


def test_region_mask_is_occlusion_aware():
    cam = TinyCamera()
    back, faces = quad(s=0.6)
    front, _ = quad(s=0.3, z=1.0)
    v = torch.cat([back, front])[None]
    f2 = torch.cat([faces, faces + 4])
    out = MeshRenderer(cam, f2, region_faces=torch.tensor([0, 1]))(v, torch.ones(1, 8, 3, dtype=torch.float64))
    hidden = out.fragments.face_index[0] >= 2
    assert hidden.any() and not out.region_mask[0, ..., 0][hidden].any()


def test_backface_culling_and_overrides():
    cam = TinyCamera()
    v, faces = quad()
    col = torch.ones(1, 4, 3, dtype=torch.float64)
    r = MeshRenderer(cam, faces, cull_backfaces=True)
    assert r(v[None], col).mask.sum() > 0
    assert r(v[None], col, faces.flip(1)).mask.sum() == 0
    big = TinyCamera(size=(16, 16))
    assert r(v[None], col, camera=big).image.shape == (1, 16, 16, 3)
    with pytest.raises(ValueError):
        MeshRenderer(cam)(v[None], col)


def test_depth_and_colour_gradients():
    cam = TinyCamera()
    v, faces = quad(s=0.6)
    v = (v + torch.tensor([0.0, 0.0, 0.3], dtype=torch.float64))[None].requires_grad_()
    v.data[0, 0, 2] += 0.4  # tilt so that depth varies over the face
    col = torch.rand(1, 4, 3, dtype=torch.float64, requires_grad=True)
    out = MeshRenderer(cam, faces)(v, col)
    (out.image.sum() + out.depth.sum()).backward()
    assert v.grad.abs().sum() > 0 and col.grad.abs().sum() > 0


def test_fit_world_translation_with_antialias():
    """Edge gradients through the module: recover a world-space translation of a flat quad."""
    cam = TinyCamera()
    v, faces = quad(s=0.5)
    col = torch.ones(1, 4, 3, dtype=torch.float64)
    r = MeshRenderer(cam, faces, antialias=True)
    true_t = torch.tensor([0.23, -0.17, 0.0], dtype=torch.float64)
    with torch.no_grad():
        target = r((v + true_t)[None], col).image
    t = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([t], lr=0.03)
    for _ in range(40):
        loss = (
            (r((v + t * torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))[None], col).image - target).square().sum()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float((t.detach()[:2] - true_t[:2]).norm()) < 0.02, t


def test_default_camera_from_geometry():
    pytest.importorskip("face3dkit.geometry.camera")
    r = MeshRenderer()
    assert r.image_size == (224, 224)
    v, faces = quad(z=0.0, s=1.0)
    out = r(v[None].float(), torch.ones(1, 4, 3), faces)
    m = out.mask[0, ..., 0]
    assert out.image.shape == (1, 224, 224, 3) and m.sum() > 0
    # Face centred on the principal point (112, 112): the mask is centred too.
    rows, cols = m.nonzero().float().mean(0)
    assert abs(float(rows) - 111.5) < 1.0 and abs(float(cols) - 111.5) < 1.0


def test_mesh_rasterizer_module():
    v, faces = quad()
    screen = TinyCamera().to_screen(v[None])
    frags = MeshRasterizer((32, 40), cull_backfaces=True)(screen, faces)
    assert torch.equal(frags.pix_to_face, rasterize(screen, faces, (32, 40), cull_backfaces=True).pix_to_face)


def test_save_image_roundtrip(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    img = torch.zeros(4, 5, 3)
    img[0, :, 0] = 1.0  # top row red
    img[:, -1, 2] = 0.5  # right column blue
    p = tmp_path / "sub" / "x.png"
    save_image(img, p)
    arr = torch.from_numpy(np.array(PIL.open(p)))
    assert arr.shape == (4, 5, 3)
    assert int(arr[0, 0, 0]) == 255 and int(arr[3, 0, 0]) == 0
    assert int(arr[2, 4, 2]) == 128
    save_image(img[None, ..., :1], tmp_path / "gray.png")
    assert PIL.open(tmp_path / "gray.png").size == (5, 4)
