"""In-memory FER dataset for the trainer tests (imported by tests and by the torchrun worker)."""

import numpy as np

from fer.conditioning import GeometryTable, attach_geometry
from fer.data.base import FerDataset


class ArrayDataset(FerDataset):
    """In-memory images with random geometry (no files)."""

    name = "arrays"

    def __init__(self, n=24, size=32, seed=0):
        super().__init__(size)
        rng = np.random.default_rng(seed)
        self.pixels = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        self.labels = np.arange(n, dtype=np.int64) % 7
        self.identities = np.arange(n, dtype=np.int64) // 7
        self.sources = [f"mem:{i}" for i in range(n)]
        self.true_pose = np.stack([rng.uniform(-60, 60, n), np.zeros(n), np.zeros(n)], 1).astype(np.float32)
        self._finish()
        table = GeometryTable(self.true_pose.copy(), rng.uniform(0.2, 0.8, (n, 68, 2)).astype(np.float32),
                              np.ones(n, bool))
        attach_geometry(self, table)

    def _decode(self, i):
        return self.pixels[i]

    def content_key(self, i):
        return str(i)


class StepContext:
    """Minimal step context for a model's ``training_step``: plain fp32 Adam steps, no AMP."""

    def __init__(self, model):
        import torch

        self.opts = {k: torch.optim.Adam(v, **model.optimizer_settings(k)) for k, v in model.param_groups().items()}

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()

    def step(self, name, loss):
        self.opts[name].zero_grad(set_to_none=True)
        loss.backward()
        self.opts[name].step()


def trainer_state(trainer):
    """Every model parameter/buffer (``p:<name>``) and optimiser state tensor (``o:<opt>:<param>:<key>``)."""
    return {**{f"p:{k}": v for k, v in trainer.model.state_dict().items()},
            **{f"o:{n}:{i}:{k}": v for n, o in trainer.optimizers.items()
               for i, s in o.state_dict()["state"].items() for k, v in s.items()}}


def assert_resumed_run_equals_straight(straight, resumed, run_a, run_b):
    """Assert an interrupted + resumed run ends bit-identical to the uninterrupted one (weights and
    optimiser state) with the same epoch metrics (timing columns aside); returns the uninterrupted
    run's state and metrics for further checks."""
    import json

    import torch

    a, b = trainer_state(straight), trainer_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    timing = {"seconds", "images_per_s"}
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (run_a, run_b))
    assert [{k: v for k, v in r.items() if k not in timing} for r in ma] == [
        {k: v for k, v in r.items() if k not in timing} for r in mb]
    return a, ma
