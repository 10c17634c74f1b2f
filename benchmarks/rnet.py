"""R-Net inference speed: faces per second of :class:`face3dkit.nets.RNet` on 224 x 224 crops for each
backbone, network input size and batch size (a script, not a test; random weights: speed does not
depend on them). ``--input-sizes 224 112``: the network resizes the 224 crop to its input size
(antialiased) inside, as the shipped R-Net (112) does; the resize is timed with it.

    python benchmarks/rnet.py --threads 2 [--device cuda] [--backbones resnet18 mobilenet_v2] [--input-sizes 224 112]
        [--amp]   # CUDA: also bf16 autocast
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
    p.add_argument("--input-sizes", type=int, nargs="+", default=[224])
    p.add_argument("--amp", action="store_true", help="also time bf16 autocast (CUDA)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    layout = face3dkit.load_model("default").layout
    print(f"# machine: {machine_summary(args.device)}, torch threads {torch.get_num_threads()}")
    print(f"# RNet on 224 x 224 crops, default model layout ({layout.total} coefficients), float32, eval, no grad")
    print("| backbone | input px | precision | parameters M | batch | ms / batch (median) | faces / s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    precisions = [None] + ([torch.bfloat16] if args.amp else [])
    for name in args.backbones:
        for size in args.input_sizes:
            net = RNet(layout, name, input_size=None if size == 224 else size).to(dev).eval()
            n_par = sum(q.numel() for q in net.parameters()) / 1e6
            for amp in precisions:
                for b in args.batches:
                    x = torch.rand(b, 3, 224, 224, device=dev)
                    times = []
                    cast = torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=amp is not None)
                    with torch.no_grad(), cast:
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
                    print(f"| {name} | {size} | {'bf16' if amp else 'fp32'} | {n_par:.1f} | {b} | {1000 * med:.1f} | "
                          f"{b / med:.1f} |")


if __name__ == "__main__":
    main()
