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
