"""face3dkit train_rnet under a real ``torchrun`` (2 CPU processes, Gloo): each rank renders its
own batch, the gradients are averaged, rank 0 writes the run.

The worker script is written by the test; the test then re-derives the run in one process: the
same initial weights, rank 0's and rank 1's batches, each one's gradient, their mean, Adam.
"""

import copy
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent('''
    import sys
    import torch
    torch.set_num_threads(1)
    from face3dkit.regress import RNetTrainConfig, SyntheticFaces, train_rnet

    cfg = RNetTrainConfig(steps=2, batch_size=2, lr=1e-3, checkpoint_every=1, seed=5, amp="off",
                          data=SyntheticFaces(size=32))
    rows = train_rnet(sys.argv[1], cfg)
    import os
    torch.save(rows, os.path.join(sys.argv[1], f"rows{os.environ['RANK']}.pt"))
''')


def _torchrun() -> list[str] | None:
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    return [exe] if exe else None


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with Gloo is not available")
def test_torchrun_train_rnet_averages_per_rank_gradients(tmp_path, one_thread):
    """(The reference runs with one thread, as the workers do: the order of the convolutions' float
    reductions then matches, which Adam's normalised first steps would otherwise amplify.)"""
    launcher = _torchrun()
    if launcher is None:
        pytest.skip("torchrun not found")
    import face3dkit
    from face3dkit.geometry import PerspectiveCamera
    from face3dkit.nets import RNet
    from face3dkit.regress import HybridLossConfig, SyntheticFaces, synthetic_batch
    from face3dkit.regress.hybrid import rnet_loss

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([*launcher, "--standalone", "--nproc-per-node", "2", str(script), str(run)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The reference, in this process.
    model = face3dkit.load_model("default")
    data = SyntheticFaces(size=32)
    cam = PerspectiveCamera.for_image_size(32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        net = RNet(model.layout, "resnet18")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    cfg = HybridLossConfig(supervised=1.0)
    means = []
    for step in range(2):
        net.train()
        grads, terms = [], []
        for rank in (1, 0):  # rank 0 last: the net keeps its batch-norm statistics (broadcast by the run)
            n = copy.deepcopy(net) if rank else net
            n.zero_grad(set_to_none=True)
            total, t = rnet_loss(n, model, synthetic_batch(model, data, 2, 5, step, rank=rank), cam, cfg)
            total.backward()
            grads.append([p.grad.clone() for p in n.parameters()])
            terms.append({"loss": float(total.detach()), **{k: float(v.detach()) for k, v in t.items()}})
        for p, g1, g0 in zip(net.parameters(), *grads, strict=True):
            p.grad = (g0 + g1) / 2
        opt.step()
        means.append({k: (terms[0][k] + terms[1][k]) / 2 for k in terms[0]})
        assert terms[0]["loss"] != terms[1]["loss"]  # the ranks saw different renders

    saved = RNet.load(run / "rnet.pt").state_dict()
    ref = net.state_dict()
    assert saved.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(saved[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
    rows0, rows1 = torch.load(run / "rows0.pt"), torch.load(run / "rows1.pt")
    assert rows0 == rows1 and [r["step"] for r in rows0] == [1, 2]
    for row, m in zip(rows0, means, strict=True):
        for k, v in m.items():
            assert row[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert (run / "metrics.csv").read_text().count("\n") == 3 and not list(run.glob("*.f3dtmp*"))


def test_autocast_dtype_and_a_bf16_step_on_the_cpu():
    """AMP: 'auto' is off on the CPU; a bf16 autocast step gives the fp32 step's loss within bf16's
    precision, coefficients reach the renderer as float32, and the weights move."""
    import face3dkit
    from face3dkit.geometry import PerspectiveCamera
    from face3dkit.nets import RNet
    from face3dkit.regress import HybridLossConfig, SyntheticFaces, synthetic_batch
    from face3dkit.regress.hybrid import autocast_dtype, rnet_loss, rnet_train_step

    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("off", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("fp16", cpu) is torch.float16
    with pytest.raises(ValueError, match="amp must be"):
        autocast_dtype("fp8", cpu)
    model = face3dkit.load_model("default")
    batch = synthetic_batch(model, SyntheticFaces(size=32), 2, 0, 0)
    cam = PerspectiveCamera.for_image_size(32)
    torch.manual_seed(0)
    net = RNet(model.layout, "resnet18").eval()
    with torch.no_grad():
        l32, _ = rnet_loss(net, model, batch, cam, HybridLossConfig(supervised=1.0))
        l16, t16 = rnet_loss(net, model, batch, cam, HybridLossConfig(supervised=1.0), amp_dtype=torch.bfloat16)
    assert l16.dtype == torch.float32 and all(v.dtype == torch.float32 for v in t16.values())
    assert float(l16) == pytest.approx(float(l32), rel=0.05)
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rec = rnet_train_step(net, model, batch, opt, cam, HybridLossConfig(supervised=1.0), amp_dtype=torch.bfloat16)
    assert all(v == v for v in rec.values())  # finite (no NaN)
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
