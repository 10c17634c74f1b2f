"""Benchmark of the face3dkit rasterizer / renderer (a script, not a test).

Measures, for a face mesh (``face3dkit.load_model('default')`` if it loads, else a procedural
ellipsoid face of ~20k triangles covering about half of the image), the median wall time of

* ``fwd``: ``rasterize`` + ``interpolate`` of per-vertex colours (no autograd),
* ``fwd+bwd``: the same with gradients w.r.t. screen vertices and colours, plus a photometric
  loss and its backward,
* ``fwd+bwd+aa``: as ``fwd+bwd`` with :func:`~face3dkit.render.antialias` (edge gradients),

at 224^2 and 512^2, batch 1 and 8, on CPU (``torch.set_num_threads``) and CUDA when available,
with PyTorch3D's rasterizer side by side (and a ratio column) when it imports.

Usage::

    python benchmarks/render.py [--device cpu|cuda|all] [--repeats 10] [--threads 2]
                                [--sizes 224 512] [--batches 1 8] [--no-aa]

Peak memory: CUDA ``torch.cuda.max_memory_allocated``; CPU the increase of the process peak RSS
over the RSS before the run (``VmHWM``, reset through ``/proc/self/clear_refs`` after
``malloc_trim``, where the kernel allows it), else ``n/a``; inputs are excluded in both cases.
Timings on a shared machine are pessimistic: the load average is printed at the top.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from face3dkit.render import antialias, edge_topology, interpolate, pytorch3d_available, rasterize
from face3dkit.sysinfo import cpu_name

# ----------------------------------------------------------------------------- machine / memory


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Return freed heap memory to the OS (glibc), then reset the peak-RSS counter (VmHWM)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory increase during a block (MiB): CUDA allocator or CPU peak RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.ok = _reset_peak_rss()
            self.base = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        else:
            peak = _status_kb("VmHWM")
            if self.ok and peak is not None and self.base is not None:
                self.mib = max(peak - self.base, 0) / 1024


# ----------------------------------------------------------------------------- meshes
def procedural_face(n: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Front half of an ellipsoid (0.8 x 1.0 x 0.6 model units), 2 (n-1)^2 triangles, colours."""
    lim = 0.49 * math.pi
    th = torch.linspace(-lim, lim, n)
    ph = torch.linspace(-lim, lim, n)
    T, P = torch.meshgrid(th, ph, indexing="ij")
    x = 0.8 * torch.sin(T) * torch.cos(P)
    y = 1.0 * torch.sin(P)
    z = 0.6 * torch.cos(T) * torch.cos(P)
    verts = torch.stack([x, y, z], -1).reshape(-1, 3)
    idx = torch.arange(n * n).view(n, n)
    a, b = idx[:-1, :-1].reshape(-1), idx[1:, :-1].reshape(-1)
    c, d = idx[1:, 1:].reshape(-1), idx[:-1, 1:].reshape(-1)
    faces = torch.cat([torch.stack([a, b, c], 1), torch.stack([a, c, d], 1)])
    colors = (verts * 0.5 + 0.5).clamp(0, 1)
    return verts, faces, colors


def load_mesh() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(verts (N, 3) world, faces (F, 3), colours (N, 3), description)."""
    try:
        import face3dkit

        model = face3dkit.load_model("default")
        torch.manual_seed(0)
        coeffs = model.sample(1)
        out = model(coeffs, camera=face3dkit.PerspectiveCamera())
        return (
            out.verts_world[0].detach(),
            model.faces.long(),
            out.color[0].detach().clamp(0, 1),
            f"face3dkit.load_model('default'): {model.faces.shape[0]} triangles",
        )
    except Exception as exc:  # the model may not be available yet
        v, f, c = procedural_face()
        return v, f, c, f"procedural ellipsoid face (default model unavailable: {exc!r}): {f.shape[0]} triangles"


def make_camera(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Deng et al.'s camera scaled to ``size`` (focal 1015 * size / 224, centre size / 2)."""
    try:
        from face3dkit.geometry.camera import PerspectiveCamera

        return PerspectiveCamera.for_image_size(size).to_screen
    except Exception:
        f = 1015.0 * size / 224.0

        def to_screen(p: torch.Tensor) -> torch.Tensor:
            d = 10.0 - p[..., 2]
            return torch.stack([size / 2 + f * p[..., 0] / d, size / 2 - f * p[..., 1] / d, d], -1)

        return to_screen


# ----------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(
    screen: torch.Tensor,
    faces: torch.Tensor,
    colors: torch.Tensor,
    size: int,
    mode: str,
    backend: str,
    topo: Any,
) -> None:
    if mode == "fwd":
        with torch.no_grad():
            frags = rasterize(screen, faces, size, backend=backend)
            interpolate(colors, frags, faces, verts=screen)
        return
    v = screen.detach().requires_grad_()
    c = colors.detach().requires_grad_()
    frags = rasterize(v, faces, size, backend=backend)
    img = interpolate(c, frags, faces, verts=v)
    if mode == "fwd+bwd+aa":
        img = antialias(img, frags, v, faces, topology=topo)
    loss = (img - 0.5).square().mean()
    loss.backward()


def bench(fn: Callable[[], None], device: torch.device, repeats: int) -> tuple[float, float, float | None]:
    """(median ms, min ms, peak MiB) of ``fn``."""
    for _ in range(2):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    with PeakMemory(device) as mem:
        fn()
    return 1e3 * statistics.median(times), 1e3 * min(times), mem.mib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="all", help="cpu, cuda or all (default: all available)")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per row (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--no-aa", action="store_true", help="skip the antialias rows")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA requested but not available")

    verts, faces, colors, desc = load_mesh()
    try:
        load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "load average n/a"
    print(f"CPU: {cpu_name()} | {os.cpu_count()} logical CPUs | torch.set_num_threads({args.threads})")
    print(f"torch {torch.__version__} | python {platform.python_version()} | {load}")
    if torch.cuda.is_available():
        print(f"CUDA: {torch.cuda.get_device_name(0)}")
    p3d = pytorch3d_available()
    print(f"mesh: {desc}, {verts.shape[0]} vertices | pytorch3d: {'yes' if p3d else 'not importable'}")
    print(f"timing: median (and min) of {args.repeats} runs after 2 warm-ups; memory: peak increase in one run")
    modes = ["fwd", "fwd+bwd"] + ([] if args.no_aa else ["fwd+bwd+aa"])
    header = f"{'device':6} {'size':>5} {'B':>3} {'mode':11} {'cover':>6} {'torch ms':>9} {'(min)':>7} {'peak MiB':>9}"
    if p3d:
        header += f" {'p3d ms':>8} {'torch/p3d':>9}"
    print()
    print(header)
    print("-" * len(header))
    topo = edge_topology(faces)
    for device in devices:
        for size in args.sizes:
            to_screen = make_camera(size)
            for B in args.batches:
                screen = to_screen(verts[None].expand(B, -1, -1).to(device)).contiguous()
                col = colors[None].expand(B, -1, -1).to(device).contiguous()
                f = faces.to(device)
                t_dev = type(topo)(*(x.to(device) for x in topo))
                cover = float(rasterize(screen, f, size).mask.float().mean())
                for mode in modes:
                    fn = functools.partial(run_case, screen, f, col, size, mode, "torch", t_dev)
                    ms, ms_min, mib = bench(fn, device, args.repeats)
                    mem = "n/a" if mib is None else f"{mib:.0f}"
                    row = f"{device.type:6} {size:>5} {B:>3} {mode:11} {cover:>6.1%} {ms:>9.1f} {ms_min:>7.1f} {mem:>9}"
                    if p3d:
                        fn = functools.partial(run_case, screen, f, col, size, mode, "pytorch3d", t_dev)
                        pms, _, _ = bench(fn, device, args.repeats)
                        row += f" {pms:>8.1f} {ms / pms:>9.2f}"
                    print(row, flush=True)


if __name__ == "__main__":
    main()
