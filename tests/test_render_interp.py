"""interpolate / barycentrics: perspective correctness and gradients."""

from __future__ import annotations

import pytest
import torch

from face3dkit.render import barycentrics, interpolate, pixel_centers, rasterize

F_PX, CX, CY, DIST = 40.0, 12.0, 10.0, 5.0


def project(world: torch.Tensor) -> torch.Tensor:
    """Deng-style pinhole: d = DIST - z, u = cx + f x / d, v = cy - f y / d."""
    d = DIST - world[..., 2]
    return torch.stack([CX + F_PX * world[..., 0] / d, CY - F_PX * world[..., 1] / d, d], -1)


def tilted_scene(dtype=torch.float64):
    world = torch.tensor(
        [
            [[-0.9, -0.8, 1.5], [0.8, -0.6, -1.0], [-0.2, 0.9, 0.3], [0.9, 0.8, 2.0]],
            [[-0.5, -0.5, -2.0], [0.7, -0.2, 2.5], [0.0, 0.8, 0.0], [0.6, 0.7, -1.0]],
        ],
        dtype=dtype,
    )
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    return world, faces


def test_perspective_correct_interpolation_hits_the_pixel_ray():
    """Interpolating world coordinates must give the 3D surface point seen through each pixel
    centre: it projects back onto the centre, and its depth equals zbuf."""
    world, faces = tilted_scene()
    screen = project(world)
    frags = rasterize(screen, faces, (20, 24))
    assert frags.mask.sum() > 100
    P = interpolate(world, frags, faces, verts=screen)
    m = frags.mask
    back = project(P)[m]
    c = pixel_centers((20, 24), dtype=torch.float64).expand(2, -1, -1, -1)[m]
    torch.testing.assert_close(back[:, :2], c, atol=1e-9, rtol=0)
    torch.testing.assert_close(back[:, 2], frags.zbuf[m], atol=1e-9, rtol=0)


def test_barycentrics_match_fragments_and_background():
    world, faces = tilted_scene()
    screen = project(world)
    frags = rasterize(screen, faces, (20, 24))
    bary, z = barycentrics(screen, faces, frags, return_depth=True)
    torch.testing.assert_close(bary, frags.bary, atol=1e-12, rtol=0)
    torch.testing.assert_close(z, frags.zbuf, atol=1e-12, rtol=0)
    attrs = torch.rand(2, 4, 5, dtype=torch.float64)
    a1 = interpolate(attrs, frags, faces)
    a2 = interpolate(attrs, frags, faces, verts=screen)
    torch.testing.assert_close(a1, a2)
    assert torch.all(a2[~frags.mask] == 0)
    shared = interpolate(attrs[0], frags, faces, verts=screen)
    torch.testing.assert_close(shared, interpolate(attrs[0].expand(2, -1, -1), frags, faces))
    # Per-batch faces give the same as shared faces.
    fb = faces.expand(2, -1, -1)
    torch.testing.assert_close(interpolate(attrs, rasterize(screen, fb, (20, 24)), fb, verts=screen), a2)


def test_vertex_values_reproduced_at_vertices():
    """A vertex exactly on a pixel centre: the interpolated attribute there is its value."""
    screen = torch.tensor([[[3.5, 2.5, 2.0], [3.5, 12.5, 3.0], [13.5, 2.5, 4.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    attrs = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [7.0, -3.0]]], dtype=torch.float64)
    frags = rasterize(screen, faces, 16)
    out = interpolate(attrs, frags, faces, verts=screen)
    assert int(frags.pix_to_face[0, 2, 3]) == 0  # on a top and a left edge: owned
    torch.testing.assert_close(out[0, 2, 3], attrs[0, 0])


def test_gradcheck_interpolate_positions_and_attributes():
    world, faces = tilted_scene()
    # A coarse 9 x 11 image: few pixels, fast gradcheck.
    screen = project(world) * torch.tensor([9 / 20, 11 / 24, 1.0], dtype=torch.float64)
    frags = rasterize(screen, faces, (9, 11))
    v = screen.clone().requires_grad_()
    assert frags.mask.sum() > 20
    attrs = torch.rand(2, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: interpolate(a, frags, faces, verts=x), (v, attrs))
    shared = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: interpolate(a, frags, faces, verts=x), (v, shared))
    assert torch.autograd.gradcheck(lambda a: interpolate(a, frags, faces), (attrs,))
    assert torch.autograd.gradcheck(lambda x: barycentrics(x, faces, frags, return_depth=True), (v,))
    assert torch.autograd.gradgradcheck(lambda x: barycentrics(x, faces, frags), (v,))


def test_fused_backward_matches_autograd_reference():
    """The hand-written backward equals autograd through barycentrics() on a bigger scene."""
    gen = torch.Generator().manual_seed(0)
    B, V, F = 2, 30, 40
    screen = torch.rand(B, V, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [32.0, 32.0, 2.0], dtype=torch.float64
    )
    screen[..., 2] += 1.0
    faces = torch.randint(0, V, (F, 3), generator=gen)
    attrs = torch.rand(B, V, 3, generator=gen, dtype=torch.float64)
    frags = rasterize(screen, faces, 32)
    w = torch.rand(B, 32, 32, 3, generator=gen, dtype=torch.float64)
    v1, a1 = screen.clone().requires_grad_(), attrs.clone().requires_grad_()
    (interpolate(a1, frags, faces, verts=v1) * w).sum().backward()
    v2, a2 = screen.clone().requires_grad_(), attrs.clone().requires_grad_()
    bary = barycentrics(v2, faces, frags).clamp(min=0)
    vid = faces[frags.face_index.clamp(min=0)]  # (B, H, W, 3)
    A = torch.gather(a2, 1, vid.reshape(B, -1, 1).expand(-1, -1, 3).reshape(B, -1, 3)).view(B, 32, 32, 3, 3)
    ref = (A * bary[..., None]).sum(-2) * frags.mask[..., None]
    (ref * w).sum().backward()
    torch.testing.assert_close(v1.grad, v2.grad)
    torch.testing.assert_close(a1.grad, a2.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    world, faces = tilted_scene(dtype)
    screen = project(world)
    frags = rasterize(screen, faces, 16)
    out = interpolate(world, frags, faces, verts=screen)
    assert out.dtype == dtype and frags.bary.dtype == dtype
