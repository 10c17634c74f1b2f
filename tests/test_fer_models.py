"""fer.models: architecture shapes, torchvision weights, one CPU training step lowers the losses."""


import pytest
import torch
from fer_arrays import StepContext as Ctx

from face3dkit.nets.resnet import resnet18
from fer.models import GGPIConfig, GGPIModel, build_model
from fer.models.ggpi import signed_one_hot, total_variation

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "tiny", "enc_channels": 8, "gen_channels": 32, "cls_hidden": 64, "datt_fc": 64}


def _batch(b=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(b, 3, size, size, generator=g),
        "label": torch.arange(b) % 7,
        "landmarks": 0.3 + 0.4 * torch.rand(b, 68, 2, generator=g),
        "pose_class": torch.tensor([0, 3, 6, -1, 2, 4, 1, 5])[:b],
    }


def _terms(model, batch, seed=123):
    torch.manual_seed(seed)  # same permutation, prior samples and dropout masks before and after
    with torch.no_grad():
        return {k: float(v) for k, v in model.loss_terms(batch).items() if not k.startswith("_")}


@pytest.mark.parametrize("kind,geometry", [("baseline", False), ("ggpi", True), ("ggpi", False)])
def test_one_step_lowers_losses_on_a_fixed_batch(kind, geometry):
    torch.manual_seed(0)
    model = build_model(kind, "small", image_size=32, use_geometry=geometry, lr=1e-3, **TINY)
    model.train()
    batch = _batch()
    before = _terms(model, batch)
    torch.manual_seed(7)
    metrics = model.train_step(batch, Ctx(model))
    after = _terms(model, batch)
    watched = ["cls_real"] + (["rec"] if kind == "ggpi" else []) + (["geo"] if geometry else [])
    for k in watched:
        assert after[k] < before[k], (k, before[k], after[k])
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_ggpi_shapes_and_ranges():
    cfg = GGPIConfig(image_size=64, **TINY)
    m = GGPIModel(cfg).eval()
    x = torch.rand(3, 3, 64, 64)
    f = m.E(x * 2 - 1)
    assert f.shape == (3, 50) and f.abs().max() <= 1
    code = m.E_p(torch.rand(3, 136))
    assert code.shape == (3, 32) and m.geo_decoder(code).shape == (3, 136)
    img = m.G(torch.cat([f, code], 1))
    assert img.shape == (3, 3, 64, 64) and img.abs().max() <= 1
    assert m.D_i(f).shape == (3,)
    assert m.D_att(img, signed_one_hot(torch.tensor([0, 6, -1]), 7)).shape == (3,)
    exp, pose = m.D_acc(x)
    assert exp.shape == (3, 7) and pose.shape == (3, 7) and m.classify(x).shape == (3, 7)
    # Stage counts of the authors' layout: log2(s) - 2 stride-2 convolutions down to a 4 x 4 map.
    convs = [mod for mod in m.E.convs if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64] and all(c.stride == (2, 2) for c in convs)
    assert [c.out_channels for c in m.D_att.modules() if isinstance(c, torch.nn.Conv2d)] == [16, 32, 64, 128]
    with pytest.raises(ValueError, match="power of two"):
        GGPIModel(GGPIConfig(image_size=48, **TINY))


def test_signed_one_hot_and_tv():
    assert signed_one_hot(torch.tensor([1, -1]), 3).tolist() == [[-1, 1, -1], [0, 0, 0]]
    x = torch.zeros(2, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0  # 4 unit jumps: 2 vertical, 2 horizontal; l2 = sum/2
    assert float(total_variation(x)) == pytest.approx(((2 / 2) / 3 + (2 / 2) / 3) / 2)


def test_classifier_backbone_loads_torchvision_weights(tmp_path):
    src = resnet18()
    torch.nn.init.normal_(src.conv1.weight)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(src.state_dict(), path)
    model = build_model("ggpi", "small", image_size=32, backbone="resnet18", backbone_weights=str(path),
                        enc_channels=8, gen_channels=32)
    assert torch.equal(model.D_acc.backbone.conv1.weight, src.conv1.weight)
    base = build_model("baseline", "small", backbone="resnet18", backbone_weights=str(path))
    assert torch.equal(base.classifier.backbone.layer4[1].bn2.running_var, src.layer4[1].bn2.running_var)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(Exception, match="bad.pth"):
        build_model("baseline", "small", backbone="resnet18", backbone_weights=str(tmp_path / "bad.pth"))


def test_profiles():
    paper = build_model("ggpi", "paper", image_size=128)
    assert paper.config.backbone == "resnet50" and paper.config.gen_channels == 1024
    assert paper.config.w_rec == 1.0 and paper.config.w_adv_img == 1e-4 and paper.config.lr == 2e-4
    small = build_model("baseline", "small", backbone=None)
    assert small.config.backbone == "cnn"
