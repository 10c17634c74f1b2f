"""Backend selection, the PyTorch3D adapter (when importable) and CUDA (when available)."""

from __future__ import annotations

import math

import pytest
import torch

from face3dkit.render import (
    ENV_VAR,
    available_backends,
    get_backend,
    interpolate,
    pytorch3d_available,
    rasterize,
)


def face_like_mesh(n=60, size=96, dtype=torch.float32):
    """Front hemisphere of an ellipsoid projected with a pinhole camera (screen space)."""
    th = torch.linspace(-1.5, 1.5, n, dtype=torch.float64)
    ph = torch.linspace(-1.5, 1.5, n, dtype=torch.float64)
    T, P = torch.meshgrid(th, ph, indexing="ij")
    x, y, z = 0.8 * torch.sin(T) * torch.cos(P), torch.sin(P), 0.6 * torch.cos(T) * torch.cos(P)
    d = 10.0 - z
    f = 4.5 * size
    screen = torch.stack([size / 2 + f * x / d, size / 2 - f * y / d, d], -1).reshape(1, -1, 3)
    idx = torch.arange(n * n).view(n, n)
    a, b = idx[:-1, :-1].reshape(-1), idx[1:, :-1].reshape(-1)
    c, e = idx[1:, 1:].reshape(-1), idx[:-1, 1:].reshape(-1)
    faces = torch.cat([torch.stack([a, b, c], 1), torch.stack([a, c, e], 1)])
    return screen.to(dtype), faces


def test_backend_selection(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert get_backend() == "torch"
    assert get_backend("TORCH") == "torch"
    assert "torch" in available_backends()
    monkeypatch.setenv(ENV_VAR, "torch")
    assert get_backend() == "torch"
    assert get_backend("auto") == ("pytorch3d" if pytorch3d_available() else "torch")
    with pytest.raises(ValueError):
        get_backend("opengl")
    monkeypatch.setenv(ENV_VAR, "nope")
    with pytest.raises(ValueError):
        rasterize(torch.rand(1, 3, 3) + 1, torch.tensor([[0, 1, 2]]), 4)


def test_pytorch3d_requested_but_missing(monkeypatch):
    if pytorch3d_available():
        pytest.skip("pytorch3d is installed")
    monkeypatch.setenv(ENV_VAR, "pytorch3d")
    with pytest.raises(ImportError):
        rasterize(torch.rand(1, 3, 3) + 1, torch.tensor([[0, 1, 2]]), 4)


@pytest.mark.skipif(not pytorch3d_available(), reason="pytorch3d not importable")
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_pytorch3d_agrees_with_torch(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA")
    screen, faces = face_like_mesh()
    screen, faces = screen.to(device), faces.to(device)
    screen = torch.cat([screen, screen + torch.tensor([3.3, -2.1, 0.0], device=device)])
    for cull in (False, True):
        a = rasterize(screen, faces, (96, 80), backend="torch", cull_backfaces=cull)
        b = rasterize(screen, faces, (96, 80), backend="pytorch3d", cull_backfaces=cull)
        same = a.pix_to_face == b.pix_to_face
        assert float(same.float().mean()) > 0.998  # only exact edge ties may differ
        both = same & a.mask
        torch.testing.assert_close(a.bary[both], b.bary[both], atol=1e-4, rtol=0)
        torch.testing.assert_close(a.zbuf[both], b.zbuf[both], atol=1e-4, rtol=1e-5)
        assert torch.all(b.bary[~b.mask] == -1) and torch.all(b.zbuf[~b.mask] == -1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_torch_backend_cuda_matches_cpu():
    screen, faces = face_like_mesh()
    screen = screen.repeat(2, 1, 1)
    screen[1, :, :2] += 1.7
    cpu = rasterize(screen, faces, (96, 100))
    gpu = rasterize(screen.cuda(), faces.cuda(), (96, 100))
    assert gpu.pix_to_face.is_cuda
    assert float((gpu.pix_to_face.cpu() == cpu.pix_to_face).float().mean()) > 0.999
    m = gpu.pix_to_face.cpu() == cpu.pix_to_face
    torch.testing.assert_close(gpu.zbuf.cpu()[m], cpu.zbuf[m])
    col = torch.rand(2, screen.shape[1], 3)
    vs = [screen.clone().requires_grad_(), screen.cuda().requires_grad_()]
    outs = [interpolate(col.to(x.device), f, faces.to(x.device), verts=x) for x, f in zip(vs, (cpu, gpu), strict=True)]
    for o in outs:
        o.square().sum().backward()
    torch.testing.assert_close(outs[1].cpu(), outs[0], atol=1e-4, rtol=1e-4)
    assert math.isfinite(float(vs[1].grad.abs().sum()))


def test_pytorch3d_adapter_plumbing_with_fake_module(monkeypatch):
    """The adapter's conversions and output handling, against a stand-in for PyTorch3D whose
    rasterize_meshes maps NDC back to pixels with PyTorch3D's documented pixel-centre formula
    (x_ndc = (W - 2 j - 1) / min(H, W), +X left, +Y up) and returns K = 1 fragments."""
    import sys
    import types

    import face3dkit.render.backend as backend_mod

    calls = {}

    class FakeMeshes:
        def __init__(self, verts, faces):
            self.verts, self.faces = verts, faces

    def fake_rasterize_meshes(meshes, image_size, faces_per_pixel, perspective_correct, cull_backfaces, **kw):
        H, W = image_size
        s = min(H, W)
        calls.update(perspective_correct=perspective_correct, K=faces_per_pixel, cull=cull_backfaces)
        ndc = torch.stack(meshes.verts)
        u = (W - ndc[..., 0] * s) / 2  # column j centre: x = (W - 2 j - 1) / s
        v = (H - ndc[..., 1] * s) / 2
        screen = torch.stack([u, v, ndc[..., 2]], -1)
        fr = rasterize(screen, torch.stack(meshes.faces), (H, W), backend="torch")
        return fr.pix_to_face[..., None], fr.zbuf[..., None], fr.bary[..., None, :], fr.zbuf[..., None]

    mods = {
        "pytorch3d": types.ModuleType("pytorch3d"),
        "pytorch3d.structures": types.ModuleType("pytorch3d.structures"),
        "pytorch3d.renderer": types.ModuleType("pytorch3d.renderer"),
        "pytorch3d.renderer.mesh": types.ModuleType("pytorch3d.renderer.mesh"),
        "pytorch3d.renderer.mesh.rasterize_meshes": types.ModuleType("pytorch3d.renderer.mesh.rasterize_meshes"),
    }
    mods["pytorch3d.structures"].Meshes = FakeMeshes
    mods["pytorch3d.renderer.mesh.rasterize_meshes"].rasterize_meshes = fake_rasterize_meshes
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(backend_mod, "_P3D_AVAILABLE", None)
    assert pytorch3d_available()
    screen, faces = face_like_mesh(n=20, size=40)
    screen = torch.cat([screen, screen.flip(1)])  # second mesh: same faces on reversed vertices
    screen[1, 0, 2] = 1e-4  # behind the near plane: its faces are culled by the adapter
    for cull in (False, True):
        ref = rasterize(screen, faces, (40, 36), backend="torch", cull_backfaces=cull)
        got = rasterize(screen, faces, (40, 36), backend="pytorch3d", cull_backfaces=cull)
        assert calls == {"perspective_correct": True, "K": 1, "cull": False}
        assert torch.equal(got.pix_to_face, ref.pix_to_face)
        torch.testing.assert_close(got.bary, ref.bary)
        torch.testing.assert_close(got.zbuf, ref.zbuf)
