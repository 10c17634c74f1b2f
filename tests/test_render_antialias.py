"""Silhouette antialiasing: coverage, gradients (direction and magnitude), topology, fitting."""

from __future__ import annotations

import itertools

import pytest
import torch

from face3dkit.render import antialias, edge_topology, interpolate, rasterize

TRI = torch.tensor([[[10.3, 12.7, 2.0], [25.6, 55.4, 3.0], [50.2, 20.1, 2.5]]], dtype=torch.float64)
FACE = torch.tensor([[0, 1, 2]])


def shoelace(xy: torch.Tensor) -> torch.Tensor:
    """Exact area of a triangle (3, 2) (differentiable)."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * ((x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])).abs()


def coverage(verts, faces, size=64, aa=True):
    frags = rasterize(verts, faces, size)
    ones = torch.ones(verts.shape[0], verts.shape[1], 1, dtype=verts.dtype)
    img = interpolate(ones, frags, faces, verts=verts)
    return antialias(img, frags, verts, faces) if aa else img


def test_edge_topology_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    n = 5
    idx = torch.arange((n + 1) ** 2).view(n + 1, n + 1)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    faces = torch.cat([torch.stack([a, c, d], 1), torch.stack([a, d, b], 1)])
    faces = faces[torch.randperm(faces.shape[0], generator=gen)]
    faces[3] = faces[3].flip(0)  # one face with inconsistent winding
    topo = edge_topology(faces)
    F = faces.shape[0]
    for f, k in itertools.product(range(F), range(3)):
        e = {int(faces[f, (k + 1) % 3]), int(faces[f, (k + 2) % 3])}
        others = [
            (g, m)
            for g in range(F)
            for m in range(3)
            if g != f and {int(faces[g, (m + 1) % 3]), int(faces[g, (m + 2) % 3])} == e
        ]
        if len(others) == 1:
            g, m = others[0]
            assert int(topo.opposite[f, k]) == g
            same = int(faces[f, (k + 1) % 3]) == int(faces[g, (m + 1) % 3])
            assert bool(topo.same_direction[f, k]) == same
        else:
            assert int(topo.opposite[f, k]) == -1
    batched = edge_topology(faces.expand(2, -1, -1))
    assert torch.equal(batched.opposite[1], topo.opposite)


def test_coverage_sum_approximates_exact_area():
    img = coverage(TRI, FACE, aa=False)
    aa = coverage(TRI, FACE)
    area = float(shoelace(TRI[0, :, :2]))
    assert abs(float(aa.sum()) - area) < abs(float(img.sum()) - area) + 1e-9
    assert abs(float(aa.sum()) - area) < 0.003 * area
    assert 0.0 <= float(aa.min()) and float(aa.max()) <= 1.0 + 1e-12


@pytest.mark.parametrize("shift", [(0.0, 0.0), (0.37, -0.21), (-0.5, 0.25)])
def test_silhouette_gradient_matches_area_gradient(shift):
    """d(sum of antialiased coverage)/d(vertex) ~ the exact area gradient: right direction
    (outward normal of the opposite edge) and magnitude."""
    v = (TRI + torch.tensor([shift[0], shift[1], 0.0], dtype=torch.float64)).requires_grad_()
    coverage(v, FACE).sum().backward()
    xy = v.detach()[0, :, :2].clone().requires_grad_()
    shoelace(xy).backward()
    got, ref = v.grad[0, :, :2], xy.grad
    cos = torch.nn.functional.cosine_similarity(got.reshape(1, -1), ref.reshape(1, -1))
    assert float(cos) > 0.995
    torch.testing.assert_close(got, ref, rtol=0.0, atol=0.08 * float(ref.norm(dim=1).max()))
    centroid = v.detach()[0, :, :2].mean(0)
    assert torch.all((got * (v.detach()[0, :, :2] - centroid)).sum(1) > 0)  # grows outward
    assert float(v.grad[0, :, 2].abs().max()) < 1e-9  # constant colour: no depth gradient
    # Without antialiasing a constant colour gives no positional gradient at all.
    w = TRI.clone().requires_grad_()
    coverage(w, FACE, aa=False).sum().backward()
    assert float(w.grad.abs().max()) < 1e-9


def test_interior_edges_are_not_blended():
    """Two faces sharing an edge (both front-facing): only pixels next to the outer silhouette
    change; pixels along the shared diagonal keep their colour."""
    v = torch.tensor([[[8.2, 8.1, 2.0], [8.3, 40.6, 2.0], [40.4, 40.2, 2.0], [40.7, 8.4, 2.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    col = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.3, 0.3], [0.9, 0.9]]], dtype=torch.float64)
    frags = rasterize(v, faces, 48)
    img = interpolate(col, frags, faces, verts=v)
    aa = antialias(img, frags, v, faces)
    changed = (aa - img).abs().amax(-1)[0] > 0
    border = torch.zeros(48, 48, dtype=torch.bool)
    border[7:10, 7:42] = border[39:42, 7:42] = border[7:42, 7:10] = border[7:42, 39:42] = True
    assert changed.any()
    assert not changed[~border].any()


def test_folded_back_face_does_not_hide_the_silhouette():
    """A back-facing neighbour folded under a face makes the shared edge a silhouette: the result
    equals antialiasing the front face alone."""
    v = torch.tensor(
        [[[10.2, 10.3, 2.0], [10.4, 40.1, 2.0], [38.6, 30.3, 2.0], [20.5, 20.2, 3.0]]], dtype=torch.float64
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])  # face 1 lies under face 0, reversed on screen
    frags = rasterize(v, faces, 48)
    assert set(frags.pix_to_face.unique().tolist()) == {-1, 0}
    col = torch.ones(1, 4, 3, dtype=torch.float64)
    img = interpolate(col, frags, faces, verts=v)
    both = antialias(img, frags, v, faces)
    alone = antialias(img, rasterize(v, faces[:1], 48), v, faces[:1])
    torch.testing.assert_close(both, alone)


def test_gradcheck_antialias():
    v = torch.tensor([[[2.3, 2.2, 2.0], [3.1, 10.6, 2.5], [11.4, 6.3, 3.0], [12.2, 12.5, 1.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])
    frags = rasterize(v, faces, 14)
    col = torch.rand(1, 4, 2, dtype=torch.float64)
    bg = torch.rand(1, 14, 14, 2, dtype=torch.float64)

    def render(x, c):
        img = interpolate(c, frags, faces, verts=x) + (~frags.mask[..., None]) * bg
        return antialias(img, frags, x, faces)

    assert torch.autograd.gradcheck(render, (v.clone().requires_grad_(), col.requires_grad_()))


def test_fit_translation_with_antialias():
    """Photometric fitting moves a triangle onto a shifted target (edge gradients only)."""
    target_v = TRI + torch.tensor([2.6, -1.7, 0.0], dtype=torch.float64)
    with torch.no_grad():
        target = coverage(target_v, FACE)
    offset = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([offset], lr=0.3)
    losses = []
    for _ in range(40):
        v = TRI + torch.cat([offset, offset.new_zeros(1)])
        loss = (coverage(v, FACE) - target).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    err = (offset.detach() - torch.tensor([2.6, -1.7], dtype=torch.float64)).norm()
    assert float(err) < 0.25, offset
    assert losses[-1] < 0.1 * losses[0]


def test_per_batch_faces_match_shared_faces():
    v = torch.tensor(
        [[[2.3, 2.2, 2.0], [3.1, 20.6, 2.5], [21.4, 6.3, 3.0], [22.2, 22.5, 1.0]]], dtype=torch.float64
    ).repeat(2, 1, 1)
    v[1, :, :2] += 1.3
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])
    col = torch.rand(2, 4, 3, dtype=torch.float64)
    outs = []
    for f in (faces, faces.expand(2, -1, -1)):
        frags = rasterize(v, f, 26)
        outs.append(antialias(interpolate(col, frags, f, verts=v), frags, v, f))
    torch.testing.assert_close(outs[0], outs[1])
