"""Where and how wide a job runs: device choice (``auto``/``cpu``/``cuda``) and CPU thread counts.

Default CPU threads (:func:`default_threads`): one per *physical* core this process may run on,
divided by the number of processes that share the machine under ``torchrun``
(``LOCAL_WORLD_SIZE``), at least 1:

- cores: the CPUs in ``os.sched_getaffinity(0)`` (``taskset``, cgroup cpusets, SLURM bindings)
  grouped by their ``(physical_package_id, core_id)`` from
  ``/sys/devices/system/cpu/cpu<N>/topology`` (hyper-thread siblings count once); without that
  information every logical CPU counts as a core. A cgroup CPU quota (``cpu.max`` of cgroup v2,
  ``cpu.cfs_quota_us / cpu.cfs_period_us`` of v1; ``docker --cpus``) caps the count, rounded up.
- ranks: ``LOCAL_WORLD_SIZE`` (set by torchrun), else 1.
- other processes (``load_aware``, what the ``face3dkit reconstruct`` command does at start-up):
  the share of the machine's logical CPUs that the 1-minute load average says are busy is taken
  off (rounded, at least 1 thread is left), so a machine shared with other jobs is not
  oversubscribed either. Not the library default: inside a long-lived process the load average
  also counts that process's own earlier work.

PyTorch's own default is one thread per *logical* CPU of the machine regardless of affinity,
quota, other ranks or other jobs. Oversubscribed OpenMP threads wait on each other at every
parallel region: on a shared 2-CPU machine with a load average of about 15, one face of
``face3dkit reconstruct`` took 15-16 s with one thread and 120-126 s with two (torch's default
there); a user reported 14.7 s against 2.5 s on another busy 2-core machine.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = [
    "DeviceUnavailableError",
    "available_cpus",
    "busy_fraction",
    "cgroup_cpu_limit",
    "default_threads",
    "physical_cores",
    "resolve_device",
    "set_threads",
    "threads_scope",
]

LOG = logging.getLogger("face3dkit.runtime")


class DeviceUnavailableError(ValueError):
    """A device was asked for that this machine or this torch build does not have (one-line message)."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``'auto'`` (or None) → ``cuda`` when available else ``cpu``; other names are checked.

    Args:
        device: ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:<index>'`` (or a :class:`torch.device`;
            other torch device types such as ``'mps'`` are passed through when torch knows them).

    Returns:
        The device to use.

    Raises:
        DeviceUnavailableError: CUDA asked for but absent (CPU-only torch build, no driver/GPU, or
            an index past the device count), or a name torch does not know.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as e:
        raise DeviceUnavailableError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:<index>): "
                                     f"{' '.join(str(e).split())}") from None
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise DeviceUnavailableError(f"device {str(device)!r}: this torch ({torch.__version__}) is built without "
                                         "CUDA; use --device cpu or auto, or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device {str(device)!r}: CUDA is not available (no GPU or driver found); "
                                         "use --device cpu or auto")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise DeviceUnavailableError(f"device {str(device)!r}: only {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceUnavailableError(f"device {str(device)!r}: MPS is not available; use --device cpu or auto")
    return dev


def available_cpus() -> list[int]:
    """Logical CPU ids this process may run on (``sched_getaffinity``; all CPUs where unsupported)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int] | None = None, sysfs: str | os.PathLike = "/sys/devices/system/cpu") -> int:
    """Number of distinct physical cores among logical ``cpus`` (default: :func:`available_cpus`).

    Hyper-thread siblings share ``(physical_package_id, core_id)`` in ``<sysfs>/cpu<N>/topology``;
    a CPU without readable topology counts as its own core.
    """
    cpus = available_cpus() if cpus is None else cpus
    cores: set[tuple[str, ...]] = set()
    for c in cpus:
        topo = Path(sysfs) / f"cpu{c}" / "topology"
        try:
            key: tuple[str, ...] = ((topo / "physical_package_id").read_text().strip(),
                                    (topo / "core_id").read_text().strip())
        except OSError:
            key = ("cpu", str(c))
        cores.add(key)
    return max(len(cores), 1)


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None when unlimited."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def busy_fraction() -> float:
    """Share of the machine's logical CPUs busy with runnable work (1-minute load average / CPUs, in [0, 1];
    0 where the platform has no load average)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
    return min(max(load / max(os.cpu_count() or 1, 1), 0.0), 1.0)


def default_threads(local_world_size: int | None = None, load_aware: bool = False) -> int:
    """One CPU thread per physical core available, shared among local ranks (see the module docstring).

    Args:
        local_world_size: processes on this machine (default: ``LOCAL_WORLD_SIZE``, else 1).
        load_aware: leave the cores that other processes keep busy (:func:`busy_fraction`).
    """
    n = physical_cores()
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    if local_world_size is None:
        try:
            local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        except ValueError:
            local_world_size = 1
    n = max(1, n // max(local_world_size, 1))
    if load_aware:
        n = max(1, int(n * (1.0 - busy_fraction()) + 0.5))
    return n


def set_threads(threads: int | None = None, interop: int | None = None, load_aware: bool = False) -> int:
    """Set torch's intra-op threads (and inter-op threads while that is still possible).

    Args:
        threads: intra-op threads (default: :func:`default_threads` with ``load_aware``); must be >= 1.
        interop: inter-op threads (default: ``threads``). Torch accepts this once per process and
            only before inter-op work started; later calls keep the current value (logged at
            debug level).

    Returns:
        The intra-op thread count now in effect.
    """
    n = default_threads(load_aware=load_aware) if threads is None else int(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    k = n if interop is None else int(interop)
    if torch.get_num_interop_threads() != k:
        try:
            torch.set_num_interop_threads(k)
        except RuntimeError as e:
            LOG.debug("inter-op threads stay %d: %s", torch.get_num_interop_threads(), " ".join(str(e).split()))
    return torch.get_num_threads()


@contextlib.contextmanager
def threads_scope(threads: int | None) -> Iterator[int]:
    """Run a block with ``threads`` intra-op threads (None: :func:`default_threads`; 0: leave as is);
    the previous count is restored afterwards (inter-op threads are left alone: torch fixes them
    for the process). Yields the count in effect."""
    before = torch.get_num_threads()
    n = before if threads == 0 else (default_threads() if threads is None else int(threads))
    if n < 1:
        raise ValueError(f"threads must be >= 1 (or 0: leave as is), got {threads}")
    try:
        torch.set_num_threads(n)
        yield n
    finally:
        torch.set_num_threads(before)
