"""Training of FER models: :class:`Trainer` (device-agnostic, AMP on CUDA, exact resume, DDP under
torchrun), the resumable sampler, and run-folder helpers (:mod:`fer.train.run`)."""

from fer.train.run import load_run, prepare_data, read_run_info, synthetic_set, write_run_info
from fer.train.sampler import ResumableBatchSampler
from fer.train.trainer import LRSchedule, TrainConfig, Trainer, seed_everything

__all__ = [
    "LRSchedule",
    "ResumableBatchSampler",
    "TrainConfig",
    "Trainer",
    "load_run",
    "prepare_data",
    "read_run_info",
    "seed_everything",
    "synthetic_set",
    "write_run_info",
]
