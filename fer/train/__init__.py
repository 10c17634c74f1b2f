"""Training of FER models: :class:`Trainer` (device-agnostic, AMP on CUDA, exact resume, DDP under
torchrun), the resumable sampler, run-folder helpers (:mod:`fer.train.run`), and one whole run as a
library call (:func:`run_training` with a :class:`TrainRequest`, what ``fer train`` does)."""

from fer.train.api import TrainOutcome, TrainRequest, run_training
from fer.train.model_data import open_face_set, training_data
from fer.train.run import load_run, prepare_data, read_run_info, synthetic_set, write_run_info
from fer.train.run_folder import RunFolderWriter
from fer.train.sampler import ResumableBatchSampler
from fer.train.trainer import LRSchedule, TrainConfig, Trainer, seed_everything

__all__ = [
    "LRSchedule",
    "ResumableBatchSampler",
    "RunFolderWriter",
    "TrainConfig",
    "TrainOutcome",
    "TrainRequest",
    "Trainer",
    "load_run",
    "open_face_set",
    "prepare_data",
    "read_run_info",
    "run_training",
    "seed_everything",
    "synthetic_set",
    "training_data",
    "write_run_info",
]
