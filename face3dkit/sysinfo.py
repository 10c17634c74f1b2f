"""Where a measurement ran: CPU or GPU name, cores, torch, threads, load (benchmark headers, bug reports)."""

from __future__ import annotations

import os
import platform

import torch

__all__ = ["cpu_name", "device_name", "machine_summary"]


def cpu_name() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`'s guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device = "cpu") -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return cpu_name()


def machine_summary(device: str | torch.device = "cpu") -> str:
    """One line: device and its name, logical CPUs, torch version, torch threads, load average.

    Example: ``cpu (Intel(R) Xeon(R) Processor), 2 logical CPUs, torch 2.13.0+cpu, 2 threads,
    load average 0.04 0.08 0.21``.
    """
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{torch.device(device)} ({device_name(device)}), {os.cpu_count()} logical CPUs, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load}")
