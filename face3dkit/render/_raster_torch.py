"""Pure-PyTorch rasterizer (the ``"torch"`` backend).

Algorithm (vectorised; no Python loop over faces or pixels):

1. Face setup: cull (near plane / non-finite, degenerate, optionally back faces), compute each
   face's range of pixel *centres* inside its screen bounding box, and its three edge functions.
2. Candidates: faces are grouped by the shape (sy, sx) of their candidate window (the exact bbox
   size up to 4 px, then the next power of two, capped to the image), so each group is one dense
   ``(3, faces, sy, sx)`` broadcast of the edge functions; groups are split into chunks of at most
   ``max_candidates`` pixels. Work and memory scale with the summed bbox areas (<= 4x the bbox for
   large faces), never with faces x pixels; the Python loop runs over the few window shapes
   (at most ~17 x 17) and chunks.
3. Coverage: all three edge functions positive, or zero on a top-left edge (top-left fill rule).
4. Visibility: a per-pixel ``scatter_reduce(amin)``. For float32 the key packs the depth's IEEE
   bits (monotonic for positive floats) above the packed face id, so one reduction gives the
   nearest face with ties to the smallest id; float64 uses two reductions (depth, then face id).

Watertightness: each edge function is evaluated from the edge's endpoints taken in a canonical
(lexicographic (u, v)) order and only then negated if needed, so two triangles sharing an edge
compute bitwise-opposite values (IEEE rounding is sign-symmetric). Together with the top-left rule
a pixel centre on a shared edge is owned by exactly one of the two triangles.

Per-face data is laid out corner-major, ``(3, n)``, so that every elementwise op runs on
contiguous memory (strided views and ``torch.where`` are several times slower on CPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .fragments import Fragments

__all__ = ["rasterize_torch", "DEFAULT_MAX_CANDIDATES"]

#: Default number of candidate pixels evaluated at once (bounds the peak memory of a chunk to
#: roughly ``60 bytes * max_candidates``).
DEFAULT_MAX_CANDIDATES = 1 << 21
_SMALL = 4  # windows up to this size (px) are exact; larger ones round up to a power of two


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _window_lut(size: int, device: torch.device) -> tuple[Tensor, Tensor, int]:
    """Lookup tables for bbox extents 0..size: window size (<= size) and a small class id."""
    n = torch.arange(size + 1)
    win = n.clone()
    big = n > _SMALL
    if bool(big.any()):
        pw = torch.pow(2, torch.ceil(torch.log2(n[big].double())).long())
        win[big] = pw.clamp(max=size)
    _, cls = torch.unique(win, return_inverse=True)
    return win.to(device), cls.to(device), int(cls.max()) + 1


def _bucket(
    params: Tensor, topleft: Tensor, start: Tensor, sx: int, sy: int, W: int, cd: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """Coverage of the (sy, sx) candidate windows of a slice of nf faces.

    Args:
        params: (5, 3, nf) per edge k: reference point (u, v), oriented edge vector (du, dv),
            and 1 / depth of corner k.
        topleft: (3, nf) bool, top-left edges.
        start: (3, nf) int64: window origin row i0, column j0, and flat pixel index of the origin.
        sx, sy: window size.
        W: image width.
        cd: compute dtype.

    Returns:
        (face (n,) index into the slice, flat pixel (n,), depth (n,), q (3, n) unnormalised
        perspective-correct barycentrics) for the covered candidates, or None.
    """
    dev = params.device
    cax, cay, odx, ody, invd = params.unbind(0)  # (3, nf) each
    i0, j0, p0 = start.unbind(0)  # (nf,) each
    py = (i0 + torch.arange(sy, device=dev)[:, None]).to(cd) + 0.5  # (sy, nf)
    px = (j0 + torch.arange(sx, device=dev)[:, None]).to(cd) + 0.5  # (sx, nf)
    t1 = odx[:, None] * (py - cay[:, None])  # (3, sy, nf)
    t2 = ody[:, None] * (px - cax[:, None])  # (3, sx, nf)
    e = t1[:, :, None] - t2[:, None]  # (3, sy, sx, nf) edge functions, > 0 inside
    ge = e >= 0
    sel = (ge[0] & ge[1] & ge[2]).view(-1).nonzero().squeeze(1)
    if sel.numel() == 0:
        return None
    nf = i0.numel()
    loc = torch.div(sel, nf, rounding_mode="floor")
    lf = sel - loc * nf
    ev = e.view(3, -1).index_select(1, sel)  # (3, n)
    zero = ev == 0
    if bool(zero.any()):  # exactly on an edge: covered only if it is a top-left edge
        bad = (zero & ~topleft.index_select(1, lf)).any(0)
        if bool(bad.any()):
            keep = (~bad).nonzero().squeeze(1)
            loc, lf, ev = loc[keep], lf[keep], ev[:, keep]
            if lf.numel() == 0:
                return None
    r = torch.arange(sy, device=dev)[:, None] * W + torch.arange(sx, device=dev)
    pix = p0.index_select(0, lf) + r.view(-1).index_select(0, loc)
    q = ev * invd.index_select(1, lf)  # proportional to the perspective-correct barycentrics
    z = ev.sum(0) / q.sum(0)  # = 1 / sum_k(lambda_k / d_k)
    return lf, pix, z, q


@torch.no_grad()
def rasterize_torch(
    verts: Tensor,
    faces_packed: Tensor,
    faces_per_mesh: int,
    image_hw: tuple[int, int],
    cull_backfaces: bool = False,
    near: float = 1e-3,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> Fragments:
    """Rasterize packed faces; see :func:`face3dkit.render.rasterize` for the semantics.

    Args:
        verts: (B, V, 3) screen-space vertices ``(u, v, d)``.
        faces_packed: (B * F, 3) int64 indices into ``verts.reshape(B * V, 3)``.
        faces_per_mesh: F.
        image_hw: (H, W).
        cull_backfaces: drop faces that are clockwise on screen (front = counter-clockwise as seen
            by the camera, i.e. negative signed area in the y-down pixel frame).
        near: faces with any vertex depth ``d < near`` (or non-finite coordinates) are dropped.
        max_candidates: chunk size in candidate pixels.

    Returns:
        :class:`Fragments` with ``bary`` / ``zbuf`` in ``verts.dtype``.
    """
    H, W = image_hw
    B = verts.shape[0]
    dev = verts.device
    cd = _compute_dtype(verts.dtype)
    npix = B * H * W
    nf_all = faces_packed.shape[0]

    # ---------------------------------------------------------------- face setup and culling
    vt = verts.detach().reshape(-1, 3).to(cd).t().contiguous()  # (3, BV): u, v, d rows
    g = vt.index_select(1, faces_packed.t().reshape(-1)).view(3, 3, nf_all)  # [coord, corner, f]
    X, Y, D = g.unbind(0)  # (3 corners, BF) each
    area2 = (X[1] - X[0]) * (Y[2] - Y[0]) - (Y[1] - Y[0]) * (X[2] - X[0])
    # area2 is NaN / inf if a (u, v) is; the depth sum if a depth is.
    keep = torch.isfinite(area2) & torch.isfinite(D[0] + D[1] + D[2]) & (area2 != 0)
    keep &= torch.minimum(torch.minimum(D[0], D[1]), D[2]) >= near
    if cull_backfaces:
        keep &= area2 < 0
    # Range of pixel indices whose centres (j + 0.5, i + 0.5) lie in the bbox (empty if culled).
    box = torch.stack(
        [
            torch.ceil(torch.minimum(torch.minimum(Y[0], Y[1]), Y[2]) - 0.5).clamp(0, H),
            torch.floor(torch.maximum(torch.maximum(Y[0], Y[1]), Y[2]) - 0.5).clamp(-1, H - 1),
            torch.ceil(torch.minimum(torch.minimum(X[0], X[1]), X[2]) - 0.5).clamp(0, W),
            torch.floor(torch.maximum(torch.maximum(X[0], X[1]), X[2]) - 0.5).clamp(-1, W - 1),
        ]
    )
    keep &= (box[1] >= box[0]) & (box[3] >= box[2])
    fid = keep.nonzero().squeeze(1)
    n = fid.numel()
    p2f = torch.full((npix,), -1, dtype=torch.long, device=dev)
    bary = torch.full((npix, 3), -1.0, dtype=verts.dtype, device=dev)
    zbuf = torch.full((npix,), -1.0, dtype=verts.dtype, device=dev)
    if n == 0:
        return Fragments(p2f.view(B, H, W), bary.view(B, H, W, 3), zbuf.view(B, H, W), faces_per_mesh)

    # ---------------------------------------------------------------- candidate windows
    # Faces are grouped by window shape (sy, sx): exact bbox extent up to 4 px, else the next
    # power of two (capped to the image), windows shifted to stay inside the image (the extra
    # pixels lie outside the bbox and fail the edge tests). The face tables are sorted by shape so
    # that each group is a contiguous slice.
    box = box.index_select(1, fid).long()  # (4, n): i0, i1, j0, j1
    lut_y, cls_y, _ = _window_lut(H, dev)
    lut_x, cls_x, ncx = _window_lut(W, dev)
    ey, ex = box[1] - box[0] + 1, box[3] - box[2] + 1
    key = (cls_y.index_select(0, ey) * ncx + cls_x.index_select(0, ex)).to(torch.int16)
    key_sorted, order = torch.sort(key, stable=True)
    fid = fid.index_select(0, order)
    sy, sx = lut_y.index_select(0, ey.index_select(0, order)), lut_x.index_select(0, ex.index_select(0, order))
    i0 = torch.minimum(box[0].index_select(0, order), H - sy)
    j0 = torch.minimum(box[2].index_select(0, order), W - sx)
    p0 = torch.div(fid, max(faces_per_mesh, 1), rounding_mode="floor") * (H * W) + i0 * W + j0
    start = torch.stack([i0, j0, p0])  # (3, n)
    _, ucounts = torch.unique_consecutive(key_sorted, return_counts=True)
    offs = ucounts.cumsum(0) - ucounts
    shapes = torch.stack([offs, ucounts, sy.index_select(0, offs), sx.index_select(0, offs)], 1)

    # ---------------------------------------------------------------- edge functions
    g = g.view(9, nf_all).index_select(1, fid).view(3, 3, n)
    sg = torch.sign(area2.index_select(0, fid))  # +-1: orientation
    # Edge k is opposite vertex k: from a = corner k+1 to b = corner k+2; e_k(p) ∝ barycentric k:
    # e_k(p) = sg * cross(b - a, p - c), c the lexicographically smaller endpoint, so faces
    # sharing an edge evaluate it from the same point and get exactly opposite values.
    gx = torch.cat([g[:, 1:], g[:, :2]], 1)  # (3, 4, n): corners 1, 2, 0, 1
    ax, ay = gx[0, 0:3], gx[1, 0:3]  # (3, n) contiguous views
    bx, by = gx[0, 1:4], gx[1, 1:4]
    sw = ((ax > bx) | ((ax == bx) & (ay > by))).to(cd)
    cay = ay * (1.0 - sw) + by * sw  # exact selection (finite values times 0 / 1)
    odx, ody = sg * (bx - ax), sg * (by - ay)
    params = torch.stack([torch.minimum(ax, bx), cay, odx, ody, 1.0 / g[2]])  # (5, 3, n)
    # Top-left rule on the orientation-normalised edge direction (interior on its left-hand side
    # in the y-down frame): own the edge iff it points up, or is horizontal and points right.
    topleft = (ody < 0) | ((ody == 0) & (odx > 0))  # (3, n)

    # ---------------------------------------------------------------- coverage, per window shape
    max_candidates = max(int(max_candidates), H * W)
    f_l, p_l, z_l, q_l = [], [], [], []
    for s0, cnt, wy, wx in shapes.tolist():
        per = max(1, max_candidates // (wx * wy))
        for s in range(s0, s0 + cnt, per):
            t = min(s + per, s0 + cnt)
            out = _bucket(params[..., s:t], topleft[:, s:t], start[:, s:t], wx, wy, W, cd)
            if out is not None:
                f_l.append(out[0] + s)
                p_l.append(out[1])
                z_l.append(out[2])
                q_l.append(out[3])
    if not f_l:
        return Fragments(p2f.view(B, H, W), bary.view(B, H, W, 3), zbuf.view(B, H, W), faces_per_mesh)

    # ---------------------------------------------------------------- visibility
    f = fid.index_select(0, torch.cat(f_l))  # packed face ids
    z = torch.cat(z_l)
    pix = torch.cat(p_l)
    if cd == torch.float32 and nf_all < 2**31:
        # One reduction on (depth bits << 32 | face id); positive float32 bits are monotonic.
        key = (z.view(torch.int32).long() << 32) | f
        kmin = torch.full((npix,), torch.iinfo(torch.long).max, dtype=torch.long, device=dev)
        kmin.scatter_reduce_(0, pix, key, "amin")
        win = (key == kmin.index_select(0, pix)).nonzero().squeeze(1)
    else:
        zmin = torch.full((npix,), torch.inf, dtype=cd, device=dev)
        zmin.scatter_reduce_(0, pix, z, "amin")
        at_min = (z == zmin.index_select(0, pix)).nonzero().squeeze(1)
        pa, fa = pix.index_select(0, at_min), f.index_select(0, at_min)
        fmin = torch.full((npix,), torch.iinfo(torch.long).max, dtype=torch.long, device=dev)
        fmin.scatter_reduce_(0, pa, fa, "amin")
        win = at_min[fa == fmin.index_select(0, pa)]
    pw = pix.index_select(0, win)  # exactly one winner per covered pixel
    p2f.index_copy_(0, pw, f.index_select(0, win))
    qw = torch.cat(q_l, 1).index_select(1, win)
    bary.index_copy_(0, pw, (qw / qw.sum(0)).t().to(verts.dtype))
    zbuf.index_copy_(0, pw, z.index_select(0, win).to(verts.dtype))
    return Fragments(p2f.view(B, H, W), bary.view(B, H, W, 3), zbuf.view(B, H, W), faces_per_mesh)
