"""R-Net inference speed: faces per second of :class:`face3dkit.nets.RNet` on 224 x 224 crops for each
backbone and batch size (a script, not a test; random weights: speed does not depend on them).

    python benchmarks/rnet.py --threads 2 [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

import face3dkit
from face3dkit.nets import RNet
from face3dkit.sysinfo import machine_summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    layout = face3dkit.load_model("default").layout
    print(f"# machine: {machine_summary(args.device)}, torch threads {torch.get_num_threads()}")
    print(f"# RNet on 224 x 224 crops, default model layout ({layout.total} coefficients), float32, eval, no grad")
    print("| backbone | parameters M | batch | ms / batch (median) | faces / s |")
    print("|---|---:|---:|---:|---:|")
    for name in args.backbones:
        net = RNet(layout, name).to(dev).eval()
        n_par = sum(q.numel() for q in net.parameters()) / 1e6
        for b in args.batches:
            x = torch.rand(b, 3, 224, 224, device=dev)
            times = []
            with torch.no_grad():
                net(x)
                for _ in range(args.repeats):
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    t = time.perf_counter()
                    net(x)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    times.append(time.perf_counter() - t)
            med = sorted(times)[len(times) // 2]
            print(f"| {name} | {n_par:.1f} | {b} | {1000 * med:.1f} | {b / med:.1f} |")


if __name__ == "__main__":
    main()
