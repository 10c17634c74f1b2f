"""fer.train under a real ``torchrun`` (2 CPU processes, Gloo): gradient averaging, synchronous training, resume.

The worker script is written by the test; each rank dumps what it saw and its final weights, and the
test compares them against values computed here (the mean of the per-rank gradients, disjoint shards,
identical weights on every rank).
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent('''
    import os, sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])  # the tests folder
    from fer_arrays import ArrayDataset
    from fer.models import build_model
    from fer.train import TrainConfig, Trainer, distributed

    out = sys.argv[1]
    info = distributed.setup("cpu")
    rank = info.rank

    # 1. average_gradients: rank r sets grad = (r + 1) * base; every rank must end with the mean.
    lin = torch.nn.Linear(3, 2)
    base = torch.arange(6, dtype=torch.float32).view(2, 3)
    lin.weight.grad = (rank + 1) * base
    lin.bias.grad = None  # a parameter without a gradient on this rank counts as zero
    distributed.average_gradients(list(lin.parameters()))

    # 2. A short synchronous training run.
    def make_model(seed):
        torch.manual_seed(seed)  # different initial weights per rank: the trainer must broadcast rank 0's
        return build_model("ggpi", "small", image_size=32, use_geometry=True, backbone="tiny", enc_channels=8,
                           gen_channels=32, cls_hidden=64, datt_fc=64)

    def config(max_steps=None):
        return TrainConfig(epochs=1, batch_size=4, seed=3, device="cpu", max_steps=max_steps, progress=False,
                           samples=False)

    # One epoch (32 images / (2 ranks x 4) = 4 steps) uninterrupted ...
    full = Trainer(make_model(100 + rank), ArrayDataset(32), os.path.join(out, "full"), config())
    full.fit()
    # ... and interrupted after 2 steps, then resumed by a fresh trainer with other initial weights.
    Trainer(make_model(100 + rank), ArrayDataset(32), os.path.join(out, "resumed"), config(max_steps=2)).fit()
    resumed = Trainer(make_model(300 + rank), ArrayDataset(32), os.path.join(out, "resumed"), config())
    resumed.fit(resume=True)

    def train_metrics(trainer):
        return {k: v for k, v in trainer.history[-1].items() if k.startswith("train_")} if trainer.history else {}

    torch.save({"grad_w": lin.weight.grad, "grad_b": lin.bias.grad, "world": info.world_size,
                "state": full.model.state_dict(), "resumed_state": resumed.model.state_dict(),
                "metrics": train_metrics(full), "resumed_metrics": train_metrics(resumed)},
               os.path.join(out, f"rank{rank}.pt"))
    distributed.cleanup()
''')


def _torchrun() -> list[str] | None:
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    return [exe] if exe else None


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with Gloo is not available")
def test_torchrun_two_processes_average_gradients_and_stay_in_sync(tmp_path):
    launcher = _torchrun()
    if launcher is None:
        pytest.skip("torchrun not found")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [*launcher, "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path), os.path.dirname(__file__)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2
    base = torch.arange(6, dtype=torch.float32).view(2, 3)
    for r in (r0, r1):  # mean of 1*base and 2*base; the missing bias gradients average to zero
        torch.testing.assert_close(r["grad_w"], 1.5 * base, rtol=0, atol=0)
        torch.testing.assert_close(r["grad_b"], torch.zeros(2), rtol=0, atol=0)
    # Synchronous data parallelism: after training, every parameter and buffer is identical on both
    # ranks, and a run interrupted and resumed under torchrun ends exactly where the uninterrupted one does.
    for r in (r0, r1):
        for name in ("state", "resumed_state"):
            assert r[name].keys() == r0["state"].keys()
            for k in r0["state"]:
                torch.testing.assert_close(r[name][k], r0["state"][k], rtol=0, atol=0, msg=f"{name} {k}")
    # Rank 0 records the epoch's metrics, averaged over both ranks (the resumed run included the
    # partial sums of each rank from before the interruption).
    assert r0["metrics"] and r0["metrics"]["train_loss"] > 0
    assert r0["resumed_metrics"] == pytest.approx(r0["metrics"], rel=1e-12, abs=1e-12)
    assert (tmp_path / "full").is_dir() and any((tmp_path / "full").iterdir())
