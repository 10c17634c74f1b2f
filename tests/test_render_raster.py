"""Rasterizer correctness against an exact brute-force reference written here.

The reference loops over batch, faces and pixel centres in Python with exact rational arithmetic
(``fractions.Fraction``): edge functions, the top-left fill rule, perspective-correct barycentrics
and depth are computed exactly, so it is independent of the vectorised float implementation.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from face3dkit.render import Fragments, ndc_to_screen, pixel_centers, rasterize, screen_to_ndc

# ----------------------------------------------------------------------------- reference


def ref_rasterize(verts, faces, hw, cull_backfaces=False, near=1e-3):
    """Exact reference. Returns per pixel the list of (z, packed face, bary) candidates."""
    H, W = hw
    B, V, _ = verts.shape
    fb = faces if faces.ndim == 3 else faces.unsqueeze(0).expand(B, -1, -1)
    F = fb.shape[1]
    cands = {}
    near_q = Fraction(near)
    for b in range(B):
        for f in range(F):
            ids = [int(i) for i in fb[b, f]]
            pts = [[float(c) for c in verts[b, i]] for i in ids]
            if not all(math.isfinite(c) for p in pts for c in p):
                continue
            P = [[Fraction(c) for c in p] for p in pts]
            if any(p[2] < near_q for p in P):
                continue
            area = (P[1][0] - P[0][0]) * (P[2][1] - P[0][1]) - (P[1][1] - P[0][1]) * (P[2][0] - P[0][0])
            if area == 0 or (cull_backfaces and area > 0):
                continue
            s = 1 if area > 0 else -1
            for i in range(H):
                for j in range(W):
                    px, py = Fraction(2 * j + 1, 2), Fraction(2 * i + 1, 2)
                    es = []
                    inside = True
                    for k in range(3):
                        a, c = P[(k + 1) % 3], P[(k + 2) % 3]
                        e = s * ((c[0] - a[0]) * (py - a[1]) - (c[1] - a[1]) * (px - a[0]))
                        dx, dy = s * (c[0] - a[0]), s * (c[1] - a[1])
                        top_left = dy < 0 or (dy == 0 and dx > 0)
                        if not (e > 0 or (e == 0 and top_left)):
                            inside = False
                            break
                        es.append(e)
                    if not inside:
                        continue
                    tot = sum(es)
                    q = [es[k] / tot / P[k][2] for k in range(3)]
                    z = 1 / sum(q)
                    cands.setdefault((b, i, j), []).append((z, b * F + f, [qk * z for qk in q]))
    return cands


def check_against_ref(frags: Fragments, cands, hw, B, rtol=1e-9):
    """pix_to_face exactly (nearest, ties: smallest id), bary / zbuf allclose."""
    H, W = hw
    p2f = frags.pix_to_face
    for b in range(B):
        for i in range(H):
            for j in range(W):
                got = int(p2f[b, i, j])
                cs = cands.get((b, i, j))
                if not cs:
                    assert got == -1, (b, i, j)
                    assert float(frags.zbuf[b, i, j]) == -1.0
                    assert torch.all(frags.bary[b, i, j] == -1.0)
                    continue
                zmin = min(c[0] for c in cs)
                best = min(c[1] for c in cs if c[0] == zmin)
                # exact-depth ties go to the smallest id; near-ties (float rounding) may go either way
                close = {c[1] for c in cs if abs(float(c[0] - zmin)) <= rtol * float(zmin)}
                assert got == best or (len(close) > 1 and got in close), (b, i, j, got, best)
                z, _, bary = next(c for c in cs if c[1] == got)
                tol = 1e-5 if frags.zbuf.dtype == torch.float32 else 1e-10
                assert float(frags.zbuf[b, i, j]) == pytest.approx(float(z), rel=tol, abs=tol)
                torch.testing.assert_close(
                    frags.bary[b, i, j].double(),
                    torch.tensor([float(x) for x in bary], dtype=torch.float64),
                    rtol=tol,
                    atol=tol,
                )


def random_mesh(gen, B, V, F, hw, quantum=None, per_batch_faces=False):
    H, W = hw
    lo = torch.tensor([-2.0, -2.0, 0.5], dtype=torch.float64)
    hi = torch.tensor([W + 2.0, H + 2.0, 4.0], dtype=torch.float64)
    v = lo + (hi - lo) * torch.rand(B, V, 3, generator=gen, dtype=torch.float64)
    if quantum is not None:
        v = torch.round(v / quantum) * quantum
        v[..., 2] = v[..., 2].clamp(min=0.5)
    shape = (B, F, 3) if per_batch_faces else (F, 3)
    faces = torch.randint(0, V, shape, generator=gen)
    return v, faces


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference_quantised(seed, dtype):
    """Vertices on a 1/4-pixel grid: many exact edge/vertex hits on pixel centres and ties."""
    gen = torch.Generator().manual_seed(seed)
    hw = (9, 11)
    v, faces = random_mesh(gen, 2, 7, 8, hw, quantum=0.25)
    frags = rasterize(v.to(dtype), faces, hw)
    assert frags.pix_to_face.dtype == torch.long and frags.zbuf.dtype == dtype
    check_against_ref(frags, ref_rasterize(v, faces, hw), hw, 2)


@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_generic(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    hw = (10, 8)
    v, faces = random_mesh(gen, 2, 8, 6, hw, per_batch_faces=True)
    for cull in (False, True):
        frags = rasterize(v, faces, hw, cull_backfaces=cull)
        check_against_ref(frags, ref_rasterize(v, faces, hw, cull_backfaces=cull), hw, 2)


def test_matches_reference_chunked_and_large_faces():
    """Faces larger than the image, windows clamped at the border, tiny chunk size."""
    gen = torch.Generator().manual_seed(7)
    hw = (12, 13)
    v, faces = random_mesh(gen, 2, 6, 5, hw, quantum=0.5)
    v[:, 0, :2] = torch.tensor([-30.0, -20.0], dtype=torch.float64)
    v[:, 1, :2] = torch.tensor([40.0, 6.5], dtype=torch.float64)
    faces[0] = torch.tensor([0, 1, 2])
    ref = ref_rasterize(v, faces, hw)
    check_against_ref(rasterize(v, faces, hw), ref, hw, 2)
    small = rasterize(v, faces, hw, max_candidates=1)
    check_against_ref(small, ref, hw, 2)


def watertight_grid(n: int, step: float, origin: float, gen=None, jitter: float = 0.0):
    """(n+1)^2 vertices on a grid with alternating diagonals; interior vertices optionally
    jittered on a 1/8-px lattice (the mesh stays watertight: the boundary is the square)."""
    ii, jj = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    x = origin + jj.double() * step
    y = origin + ii.double() * step
    if jitter and gen is not None:
        interior = (ii > 0) & (ii < n) & (jj > 0) & (jj < n)
        dx = torch.round((torch.rand(x.shape, generator=gen, dtype=torch.float64) - 0.5) * jitter * 8) / 8
        dy = torch.round((torch.rand(x.shape, generator=gen, dtype=torch.float64) - 0.5) * jitter * 8) / 8
        x = torch.where(interior, x + dx, x)
        y = torch.where(interior, y + dy, y)
    v = torch.stack([x, y, torch.full_like(x, 5.0)], -1).reshape(-1, 3)
    idx = torch.arange((n + 1) ** 2).view(n + 1, n + 1)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    alt = ((torch.arange(n)[:, None] + torch.arange(n)[None]) % 2 == 0).reshape(-1)
    f1 = torch.where(alt[:, None], torch.stack([a, c, d], 1), torch.stack([a, c, b], 1))
    f2 = torch.where(alt[:, None], torch.stack([a, d, b], 1), torch.stack([b, c, d], 1))
    return v, torch.cat([f1, f2])


@pytest.mark.parametrize("jitter", [0.0, 1.5])
def test_watertight_grid_covers_each_pixel_once(jitter):
    """Vertices at pixel centres (edges through centres): every pixel inside the square is covered
    by exactly one face; on the square's boundary only left/top edges are owned (top-left rule)."""
    gen = torch.Generator().manual_seed(3)
    n, step, origin = 6, 4.0, 2.5  # vertices at x.5: pixel centres
    v, faces = watertight_grid(n, step, origin, gen, jitter)
    H = W = 30
    F = faces.shape[0]
    # One face per batch element, so that double coverage is visible.
    frags = rasterize(v.unsqueeze(0).expand(F, -1, -1), faces.unsqueeze(1), (H, W))
    count = (frags.pix_to_face >= 0).sum(0)
    c = pixel_centers((H, W), dtype=torch.float64)
    lo, hi = origin, origin + n * step
    inside = (c[..., 0] > lo) & (c[..., 0] < hi) & (c[..., 1] > lo) & (c[..., 1] < hi)
    outside = (c[..., 0] < lo) | (c[..., 0] > hi) | (c[..., 1] < lo) | (c[..., 1] > hi)
    assert torch.all(count[inside] == 1)
    assert torch.all(count[outside] == 0)
    assert torch.all(count <= 1)
    on_x = (c[..., 0] >= lo) & (c[..., 0] <= hi)
    on_y = (c[..., 1] >= lo) & (c[..., 1] <= hi)
    left = (c[..., 0] == lo) & (c[..., 1] > lo) & (c[..., 1] < hi)
    top = (c[..., 1] == lo) & (c[..., 0] > lo) & (c[..., 0] < hi)
    right = (c[..., 0] == hi) & on_y
    bottom = (c[..., 1] == hi) & on_x
    assert torch.all(count[left] == 1) and torch.all(count[top] == 1)
    assert torch.all(count[right] == 0) and torch.all(count[bottom] == 0)
    # The whole mesh at once agrees with the per-face coverage.
    whole = rasterize(v[None], faces, (H, W))
    per_face = torch.where(frags.pix_to_face >= 0, torch.arange(F)[:, None, None], -1).amax(0)
    assert torch.equal(whole.pix_to_face[0], per_face)
    assert torch.allclose(whole.zbuf[0][count == 1], torch.tensor(5.0, dtype=torch.float64))


def test_fan_around_pixel_centre_single_owner():
    """Eight triangles meeting at a vertex exactly on a pixel centre: it is covered once."""
    cx, cy = 8.5, 7.5
    ang = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    ring = torch.stack([cx + 6 * torch.cos(ang), cy + 6 * torch.sin(ang)], 1)
    ring = torch.round(ring * 4) / 4
    v = torch.cat([torch.tensor([[cx, cy]], dtype=torch.float64), ring])
    v = torch.cat([v, torch.full((9, 1), 2.0, dtype=torch.float64)], 1)
    faces = torch.tensor([[0, 1 + k, 1 + (k + 1) % 8] for k in range(8)])
    frags = rasterize(v.unsqueeze(0).expand(8, -1, -1), faces.unsqueeze(1), (16, 17))
    count = (frags.pix_to_face >= 0).sum(0)
    assert int(count[7, 8]) == 1
    assert int(count.max()) == 1


@pytest.mark.parametrize("order", [0, 1])
def test_occlusion_nearest_wins(order):
    near_tri = torch.tensor([[2.0, 2.0, 2.0], [14.0, 3.0, 2.0], [5.0, 13.0, 2.0]])
    far_tri = torch.tensor([[1.0, 1.0, 3.0], [15.0, 1.0, 3.0], [15.0, 15.0, 3.0]])
    tris = [near_tri, far_tri] if order == 0 else [far_tri, near_tri]
    v = torch.cat(tris)[None]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(v, faces, 16)
    near_id = 0 if order == 0 else 1
    only_near = rasterize(near_tri[None], faces[:1], 16).mask[0]
    only_far = rasterize(far_tri[None], faces[:1], 16).mask[0]
    both = only_near & only_far
    assert both.sum() > 10
    assert torch.all(frags.pix_to_face[0][only_near] == near_id)
    assert torch.all(frags.pix_to_face[0][only_far & ~only_near] == 1 - near_id)
    assert torch.allclose(frags.zbuf[0][only_near], torch.tensor(2.0))
    assert torch.allclose(frags.zbuf[0][only_far & ~only_near], torch.tensor(3.0))


def test_interpenetrating_triangles_match_reference():
    v = torch.tensor(
        [[[1.0, 1.0, 1.0], [15.0, 2.0, 5.0], [3.0, 14.0, 1.0], [14.0, 14.0, 1.5], [2.0, 3.0, 4.0], [12.0, 1.0, 1.5]]],
        dtype=torch.float64,
    )
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    check_against_ref(rasterize(v, faces, 16), ref_rasterize(v, faces, (16, 16)), (16, 16), 1)


def test_backface_culling():
    # Counter-clockwise as seen on screen (y down): top-left -> bottom-left -> bottom-right.
    ccw = torch.tensor([[2.0, 2.0, 1.0], [2.0, 12.0, 1.0], [12.0, 12.0, 1.0]])
    v = torch.stack([ccw, ccw.flip(0)])  # batch 1: same triangle, clockwise
    faces = torch.tensor([[0, 1, 2]])
    on = rasterize(v, faces, 14, cull_backfaces=True)
    off = rasterize(v, faces, 14, cull_backfaces=False)
    assert on.mask[0].sum() > 20 and on.mask[1].sum() == 0
    assert torch.equal(off.mask[0], off.mask[1]) and torch.equal(on.mask[0], off.mask[0])


def test_front_faces_of_a_world_ccw_triangle_survive_culling():
    """A world triangle counter-clockwise seen from +z (normal toward the camera at z = 10)."""
    world = torch.tensor([[[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])
    d = 10.0 - world[..., 2]
    screen = torch.stack([16 + 100 * world[..., 0] / d, 16 - 100 * world[..., 1] / d, d], -1)
    frags = rasterize(screen, torch.tensor([[0, 1, 2]]), 32, cull_backfaces=True)
    assert frags.mask.sum() > 5


def test_near_plane_culling_and_non_finite():
    base = torch.tensor([[2.0, 2.0, 1.0], [2.0, 12.0, 1.0], [12.0, 12.0, 1.0]])
    vs = []
    for d in (1e-3, 5e-4, -1.0, float("nan"), float("inf")):
        t = base.clone()
        t[1, 2] = d
        vs.append(t)
    frags = rasterize(torch.stack(vs), torch.tensor([[0, 1, 2]]), 14, near=1e-3)
    counts = frags.mask.sum((1, 2)).tolist()
    assert counts[0] > 20  # exactly at the near plane: kept
    assert counts[1:] == [0, 0, 0, 0]
    assert torch.isfinite(frags.zbuf).all() and torch.isfinite(frags.bary).all()
    far = rasterize(torch.stack(vs[:2]), torch.tensor([[0, 1, 2]]), 14, near=1e-4)
    assert far.mask[1].sum() > 20


def test_degenerate_and_tiny_faces_ignored():
    v = torch.tensor(
        [[[1.5, 1.5, 1.0], [5.5, 5.5, 1.0], [9.5, 9.5, 1.0], [3.2, 3.2, 1.0], [3.3, 3.2, 1.0], [3.2, 3.3, 1.0]]]
    )
    faces = torch.tensor([[0, 1, 2], [0, 0, 1], [1, 1, 1], [3, 4, 5]])  # collinear, repeated, tiny
    frags = rasterize(v, faces, 12)
    assert frags.mask.sum() == 0
    assert torch.all(frags.zbuf == -1) and torch.all(frags.bary == -1)


def test_empty_inputs_and_image_size_forms():
    v = torch.rand(2, 4, 3) + torch.tensor([0.0, 0.0, 1.0])
    empty = rasterize(v, torch.zeros(0, 3, dtype=torch.long), (5, 7))
    assert empty.pix_to_face.shape == (2, 5, 7) and empty.bary.shape == (2, 5, 7, 3)
    assert torch.all(empty.pix_to_face == -1)
    off = rasterize(v - 100.0 * torch.tensor([1.0, 0, 0]), torch.tensor([[0, 1, 2]]), 6)
    assert torch.all(off.pix_to_face == -1)
    assert rasterize(v, torch.tensor([[0, 1, 2]]), [4, 3]).image_size == (4, 3)


def test_packed_and_unpacked_face_index():
    tri = torch.tensor([[1.0, 1.0, 1.0], [1.0, 7.0, 1.0], [7.0, 7.0, 1.0], [0.0, 0.0, 9.0]])
    v = torch.stack([tri, tri])
    faces = torch.tensor([[3, 3, 3], [0, 1, 2]])  # face 0 degenerate
    frags = rasterize(v, faces, 8)
    assert set(frags.pix_to_face[0].unique().tolist()) == {-1, 1}
    assert set(frags.pix_to_face[1].unique().tolist()) == {-1, 3}  # b * F + f
    assert set(frags.face_index[1].unique().tolist()) == {-1, 1}


def test_half_precision_input():
    gen = torch.Generator().manual_seed(5)
    v, faces = random_mesh(gen, 1, 6, 4, (8, 8), quantum=0.5)
    ref = rasterize(v, faces, 8)
    half = rasterize(v.half(), faces, 8)
    assert half.zbuf.dtype == torch.float16
    assert torch.equal(half.pix_to_face, ref.pix_to_face)


def test_ndc_screen_conversion_pixel_centres():
    H, W = 4, 6
    c = pixel_centers((H, W), dtype=torch.float64)  # (H, W, 2) u, v
    screen = torch.cat([c, torch.full((H, W, 1), 2.0, dtype=torch.float64)], -1)
    ndc = screen_to_ndc(screen, (H, W))
    s = min(H, W)
    j = torch.arange(W, dtype=torch.float64)
    i = torch.arange(H, dtype=torch.float64)
    # PyTorch3D: +X left, +Y up; pixel (i, j) centre x = (W - 2j - 1) / s, y = (H - 2i - 1) / s.
    torch.testing.assert_close(ndc[0, :, 0], (W - 2 * j - 1) / s)
    torch.testing.assert_close(ndc[:, 0, 1], (H - 2 * i - 1) / s)
    torch.testing.assert_close(ndc_to_screen(ndc, (H, W)), screen)
    assert float(ndc[0, 0, 0]) > 0 and float(ndc[0, 0, 1]) > 0  # top-left is +x, +y in NDC


def test_errors():
    with pytest.raises(ValueError):
        rasterize(torch.rand(3, 3), torch.tensor([[0, 1, 2]]), 4)
    with pytest.raises(ValueError):
        rasterize(torch.rand(2, 3, 3), torch.tensor([[[0, 1, 2]]] * 3), 4)
    with pytest.raises(ValueError):
        rasterize(torch.rand(1, 3, 3), torch.tensor([[0, 1, 2]]), 0)
    with pytest.raises(TypeError):
        rasterize(torch.ones(1, 3, 3, dtype=torch.long), torch.tensor([[0, 1, 2]]), 4)
    with pytest.raises(ValueError):
        rasterize(torch.rand(1, 3, 3), torch.tensor([[0, 1, 2]]), 4, near=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_edge_through_pixel_centre_inexact_coordinates(dtype):
    """Edges passing (up to rounding) through a pixel centre with non-representable endpoints:
    the two faces sharing the edge must still cover that centre exactly once (no crack, no
    double coverage), which needs sign-consistent edge evaluation."""
    gen = torch.Generator().manual_seed(11)
    n = 400
    P = torch.tensor([8.5, 8.5], dtype=torch.float64)
    ang = torch.rand(n, generator=gen, dtype=torch.float64) * math.pi
    Dv = torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    s = 0.5 + 5 * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    t = 0.5 + 5 * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    A, Bp = P - s * Dv, P + t * Dv
    normal = torch.stack([-Dv[:, 1], Dv[:, 0]], 1)
    C, Dp = P + 4 * normal - Dv, P - 4 * normal + Dv
    z = torch.rand(n, 4, 1, generator=gen, dtype=torch.float64) + 1.0
    v = torch.cat([torch.stack([A, Bp, C, Dp], 1), z], -1).to(dtype)  # (n, 4, 3)
    faces = torch.tensor([[0, 1, 2], [1, 0, 3]])  # consistent winding across the shared edge
    frags = rasterize(v, faces, 17)
    single = rasterize(v.repeat_interleave(2, 0), faces.repeat(n, 1).view(2 * n, 1, 3), 17).pix_to_face.view(
        n, 2, 17, 17
    )
    count = (single >= 0).sum(1)[:, 8, 8]
    assert torch.all(count == 1), int((count != 1).sum())
    assert torch.all(frags.pix_to_face[:, 8, 8] >= 0)
