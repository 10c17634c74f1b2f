"""face3dkit.regress: Deng et al.'s hybrid loss of predicted coefficients and an R-Net training step
(learning the pose from images: the held-out landmark loss falls)."""

import pytest
import torch

import face3dkit
from face3dkit.geometry import PerspectiveCamera
from face3dkit.losses import LossWeights
from face3dkit.nets import RNet
from face3dkit.regress import HybridLossConfig, hybrid_loss, rnet_train_step
from face3dkit.render import render_face

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return face3dkit.load_model("default")


def _batch(model, cam, seed, n=8):
    """Renders with random identity, expression, pose, light and position, their true landmarks and coefficients."""
    g = torch.Generator().manual_seed(seed)
    c = model.sample(n, generator=g, id_scale=0.7, tex_scale=0.7)
    c.exp = torch.rand(n, model.n_exp, generator=g) * 0.3
    c.angles = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.3, 0.6, 0.2])
    c.gamma[:, [0, 9, 18]] = 0.1 * torch.randn(n, 1, generator=g)
    c.trans = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.4, 0.4, 0.6])
    with torch.no_grad():
        r = render_face(model, c, cam, background=0.5)
    return {"image": r.image.clamp(0, 1), "landmarks": r.landmarks2d, "coeffs": c.join()}


def test_hybrid_loss_is_the_weighted_sum_of_its_terms(model):
    cam = PerspectiveCamera.for_image_size(32)
    b = _batch(model, cam, 0, 2)
    c = face3dkit.Coefficients.split(b["coeffs"], model.layout)
    w = LossWeights()
    total, terms = hybrid_loss(model, c, b["image"], b["landmarks"], cam, HybridLossConfig(supervised=0.5),
                               true_coeffs=c)
    want = sum(w.term_weight(k) * v for k, v in terms.items() if k != "supervised") + 0.5 * terms["supervised"]
    torch.testing.assert_close(total, want)
    # At the true coefficients the render is the image and the landmarks are the true ones.
    assert float(terms["landmark"]) < 1e-8 and float(terms["supervised"]) == 0.0
    assert float(terms["photometric"]) < 2e-3  # sqrt(eps) per pixel


def test_vertex_space_supervision_is_the_mean_displacement_each_block_causes(model):
    """supervised_space='vertices': identity and expression by the mean squared vertex displacement
    of the shapes they make (model.shape, brute force over the 21k vertices here), albedo by the
    mean squared colour change (model.albedo), each over that of a unit error in every coefficient
    (the squared norm of the basis per vertex); angles, light, translation by their MSE; the six
    averaged. hybrid_loss uses it under that setting; an unknown space is refused."""
    from face3dkit.losses import coefficient_supervision, vertex_space_supervision

    g = torch.Generator().manual_seed(4)
    p, t = model.sample(3, generator=g), model.sample(3, generator=g)
    p.exp, t.exp = torch.rand(3, model.n_exp, generator=g), torch.rand(3, model.n_exp, generator=g)
    p.angles, p.gamma, p.trans = (torch.randn(3, k, generator=g) * 0.2 for k in (3, 27, 3))
    v = model.n_verts
    zi, ze = torch.zeros(3, model.n_id), torch.zeros(3, model.n_exp)

    def msd(a, b, basis):  # mean over the batch of the per-vertex mean squared distance, per unit basis
        return float((a - b).double().pow(2).sum(-1).mean(-1).mean() / (basis.double().pow(2).sum() / v))

    want = [msd(model.shape(p.id, ze), model.shape(t.id, ze), model.id_basis),
            msd(model.shape(zi, p.exp), model.shape(zi, t.exp), model.exp_basis),
            msd(model.albedo(p.tex, 3), model.albedo(t.tex, 3), model.albedo_basis)]
    want += [float((getattr(p, k) - getattr(t, k)).pow(2).mean()) for k in ("angles", "gamma", "trans")]
    got = vertex_space_supervision(model, p, t)
    assert abs(float(got) - sum(want) / 6) < 1e-4 * sum(want), (float(got), want)
    assert 1.0 < want[0] < 4.0  # two independent N(0, 1) identities: about 2 prior variances apart
    assert float(vertex_space_supervision(model, t, t)) == 0.0
    cam = PerspectiveCamera.for_image_size(32)
    b = _batch(model, cam, 1, 2)
    c = face3dkit.Coefficients.split(b["coeffs"], model.layout)
    for space, fn in (("vertices", lambda: vertex_space_supervision(model, p[:2], c)),
                      ("coefficients", lambda: coefficient_supervision(p[:2], c))):
        _, terms = hybrid_loss(model, p[:2], b["image"], b["landmarks"], cam,
                               HybridLossConfig(supervised=1.0, supervised_space=space), true_coeffs=c)
        torch.testing.assert_close(terms["supervised"], fn())
    with pytest.raises(ValueError, match="supervised_space"):
        HybridLossConfig(supervised_space="pixels")
    from face3dkit.losses import basis_gram

    basis = torch.randn(5, 3, 2, generator=g, dtype=torch.float64)
    gram = basis_gram(basis)
    torch.testing.assert_close(gram, basis.reshape(15, 2).T @ basis.reshape(15, 2) / 5)
    basis.mul_(2)  # modified in place: the cached matrix is not reused
    torch.testing.assert_close(basis_gram(basis), 4 * gram)


def test_rnet_training_learns_pose_from_images(model):
    """150 Adam steps (lr 1e-3 decayed linearly to 0) on fresh synthetic batches (32 px): on a held-out
    batch the landmark loss falls to under 0.6 of its start (18.7 -> 5.7 with one thread, 6.6 with two)
    and the photometric loss to under 0.9 (0.082 -> 0.049, 0.045), and the weighted total (with the
    supervision) falls; the heads, zero at the start, moved. Not every term can fall here: the
    priors (coefficient, gamma, reflectance) measure the distance from the mean, where zero heads
    start; and the supervised MSE over all blocks is dominated by identity, expression and albedo,
    which 150 steps on 32 px renders do not learn (0.309 -> 0.329: any non-zero guess of an
    unknown identity costs; the pose blocks' part moves 0.0134 -> 0.0131)."""
    torch.manual_seed(0)
    cam = PerspectiveCamera.for_image_size(32)
    held = _batch(model, cam, 10_000)
    net = RNet(model.layout, "resnet18")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = 150
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / steps)  # to zero: a settled end point
    cfg = HybridLossConfig(supervised=1.0)

    def held_terms():
        net.eval()
        with torch.no_grad():
            c = face3dkit.Coefficients.split(net(held["image"].permute(0, 3, 1, 2)), model.layout)
            true = face3dkit.Coefficients.split(held["coeffs"], model.layout)
            return hybrid_loss(model, c, held["image"], held["landmarks"], cam, cfg, None, true)[1]

    before = held_terms()
    for step in range(steps):
        out = rnet_train_step(net, model, _batch(model, cam, step), opt, cam, cfg)
        sched.step()
        assert set(out) >= {"loss", "photometric", "landmark", "supervised"}
    after = held_terms()
    w = LossWeights()

    def data(t):
        return w.photometric * float(t["photometric"]) + w.landmark * float(t["landmark"])

    assert float(after["landmark"]) < 0.6 * float(before["landmark"]), (before, after)
    assert float(after["photometric"]) < 0.9 * float(before["photometric"]), (before, after)
    assert data(after) < 0.8 * data(before), (before, after)

    def total(t):
        return w.combine({k: v for k, v in t.items() if k != "supervised"})[0] + cfg.supervised * t["supervised"]

    assert float(total(after)) < 0.9 * float(total(before)), (before, after)  # 0.543 -> 0.459
    assert torch.count_nonzero(net.final_layers[3].weight) > 0  # the angle head learnt


def test_synthetic_batches_are_a_function_of_seed_and_step(model):
    from face3dkit.regress import SyntheticFaces, synthetic_batch

    cfg = SyntheticFaces(size=32)
    state = torch.get_rng_state()
    a, b, c = (synthetic_batch(model, cfg, 3, 0, s) for s in (5, 5, 6))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    assert a["image"].shape == (3, 32, 32, 3) and float(a["image"].min()) >= 0 and float(a["image"].max()) <= 1
    assert a["landmarks"].shape == (3, 68, 2) and a["coeffs"].shape == (3, model.layout.total)


def test_train_rnet_resume_reproduces_the_next_step_and_refuses_to_overwrite(tmp_path):
    """Three steps in one go equal two steps, a checkpoint, and a resumed third step, to the bit;
    the run's rnet.pt loads as an R-Net; a second run into the folder is refused."""
    from face3dkit.nets import RNet
    from face3dkit.regress import RNetTrainConfig, SyntheticFaces, train_rnet
    from face3dkit.regress.train import RunExistsError

    cfg = RNetTrainConfig(steps=3, batch_size=2, lr=1e-3, checkpoint_every=2, data=SyntheticFaces(size=32))
    full = train_rnet(tmp_path / "a", cfg)
    part = train_rnet(tmp_path / "b", RNetTrainConfig(**{**cfg.__dict__, "steps": 2}))
    # Continue b to 3 steps: its checkpoint (step 2) with the longer plan.
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    ck["config"]["steps"] = 3
    torch.save(ck, tmp_path / "b" / "checkpoint.pt")
    resumed = train_rnet(tmp_path / "b", resume=True)
    assert [r["step"] for r in resumed] == [1, 2, 3] and resumed[:2] == part
    assert resumed[2] == full[2]
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["net"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["net"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert RNet.load(tmp_path / "a" / "rnet.pt").layout == face3dkit.load_model("default").layout
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") == 4  # header + 3 steps
    with pytest.raises(RunExistsError, match="--resume"):
        train_rnet(tmp_path / "a", cfg)


def test_train_rnet_command(tmp_path):
    from click.testing import CliRunner

    from face3dkit._cli.face3dkit_cmd import main

    args = ["train-rnet", "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2", "--size", "32",
            "--no-progress", "--threads", "1", "--device", "cpu"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "trained 2 steps" in r.output and (tmp_path / "run" / "rnet.pt").is_file()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "--resume" in r.output and "Traceback" not in r.output
    import json

    assert json.loads((tmp_path / "run" / "config.json").read_text())["supervised_space"] == "coefficients"
    v = ["train-rnet", "--out", str(tmp_path / "v"), *args[3:], "--supervised-space", "vertices"]
    r = CliRunner().invoke(main, v)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "v" / "config.json").read_text())["supervised_space"] == "vertices"


def test_train_rnet_init_starts_from_the_given_weights(tmp_path):
    """``init`` copies an R-Net checkpoint's weights into the new run (after one step at a vanishing
    learning rate the run's parameters are the given ones, not a fresh initialisation); a checkpoint of
    another input size is refused in one line naming the file."""
    from face3dkit.nets._checkpoint import CheckpointMismatchError
    from face3dkit.regress import RNetTrainConfig, SyntheticFaces, train_rnet

    base = RNetTrainConfig(steps=2, batch_size=2, lr=1e-3, data=SyntheticFaces(size=32))
    train_rnet(tmp_path / "a", base)
    start = RNet.load(tmp_path / "a" / "rnet.pt")
    given = dict(start.named_parameters())  # batch-norm statistics move with any step
    tuned = RNetTrainConfig(**{**base.__dict__, "steps": 1, "lr": 1e-12, "seed": 5,
                               "init": str(tmp_path / "a" / "rnet.pt")})
    train_rnet(tmp_path / "b", tuned)
    got = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["net"]
    assert all(torch.allclose(got[k].float(), given[k].float(), atol=1e-6) for k in given)
    assert not torch.equal(got["final_layers.1.weight"], torch.zeros_like(got["final_layers.1.weight"]))
    bad = RNetTrainConfig(**{**tuned.__dict__, "input_size": 24})
    with pytest.raises(CheckpointMismatchError, match=r"rnet\.pt.*input size"):
        train_rnet(tmp_path / "c", bad)
