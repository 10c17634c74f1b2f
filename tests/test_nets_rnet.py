"""face3dkit.nets.RNet: Deng et al.'s coefficient regression network (layout, zero-initialised
heads, Deep3DFaceRecon_pytorch checkpoint keys, ImageNet backbone weights from a file)."""

import pytest
import torch

import face3dkit
from face3dkit.nets import BFM_LAYOUT, CheckpointMismatchError, RNet
from face3dkit.nets.resnet import resnet18


def test_layout_and_zero_initialised_heads():
    model = face3dkit.load_model("default")
    net = RNet(model.layout, "resnet18").eval()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(x)
        c = net.coefficients(x)
    assert out.shape == (2, model.layout.total) and torch.count_nonzero(out) == 0  # the mean face at start
    assert c.id.shape == (2, model.n_id) and c.trans.shape == (2, 3) and c.gamma.shape == (2, 27)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(2, 224, 224, 3))
    with pytest.raises(ValueError, match="unknown R-Net backbone"):
        RNet(model.layout, "vgg")


def test_deep3d_checkpoint_keys_load_and_heads_are_per_block_linear(tmp_path):
    """A checkpoint in Deep3DFaceRecon_pytorch's layout ({'net_recon': backbone.* + final_layers.0-6})
    loads; each block is its 1 x 1 head applied to the pooled backbone features (recomputed here
    as a matrix product), translation = head 5 (x, y) then head 6 (z)."""
    net = RNet(BFM_LAYOUT, "resnet50")
    keys = net.state_dict()
    assert keys["final_layers.0.weight"].shape == (80, 2048, 1, 1) and "backbone.layer4.2.bn3.running_var" in keys
    assert [keys[f"final_layers.{k}.weight"].shape[0] for k in range(7)] == [80, 64, 80, 3, 27, 2, 1]
    assert not any(k.startswith("backbone.fc") for k in keys) and BFM_LAYOUT.total == 257
    g = torch.Generator().manual_seed(1)
    state = {k: (torch.randn(v.shape, generator=g) * 0.05 if v.is_floating_point() else v) for k, v in keys.items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 1.0
    torch.save({"net_recon": state, "epoch": 20}, tmp_path / "epoch_20.pth")
    net.load_deep3d_checkpoint(tmp_path / "epoch_20.pth").eval()
    x = torch.rand(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        c = net.coefficients(x)
        f = net.backbone(x)  # (2, 2048) pooled features
    heads = [state[f"final_layers.{k}.weight"][:, :, 0, 0] for k in range(7)]
    want = [f @ w.T + state[f"final_layers.{k}.bias"] for k, w in enumerate(heads)]
    torch.testing.assert_close(c.id, want[0])
    torch.testing.assert_close(c.gamma, want[4])
    torch.testing.assert_close(c.trans, torch.cat([want[5], want[6]], 1))
    # A BFM checkpoint does not fit the default model's layout: one line naming the file.
    other = RNet(face3dkit.load_model("default").layout, "resnet50")
    with pytest.raises(CheckpointMismatchError, match="epoch_20.pth") as e:
        other.load_deep3d_checkpoint(tmp_path / "epoch_20.pth")
    assert "\n" not in str(e.value)


def test_imagenet_backbone_weights_from_a_torchvision_file(tmp_path):
    ref = resnet18()  # torchvision keys, 1000-class fc included
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    torch.save(ref.state_dict(), tmp_path / "resnet18-imagenet.pth")
    net = RNet(BFM_LAYOUT, "resnet18", imagenet_weights=tmp_path / "resnet18-imagenet.pth")
    got = net.backbone.state_dict()
    for k, v in ref.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(got[k], v), k
    assert torch.count_nonzero(net.final_layers[0].weight) == 0  # heads stay zero


def test_save_load_and_reconstruct_methods(tmp_path):
    """An R-Net saved by face3dkit loads with its backbone and layout; `reconstruct --method rnet`
    writes the regressed coefficients (no optimisation: they are the network's output),
    `rnet+fit` starts the fit there; a layout that does not fit the model and a missing checkpoint
    are one-line errors."""
    import json
    import math

    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from face3dkit._cli.face3dkit_cmd import main
    from face3dkit.geometry import PerspectiveCamera
    from face3dkit.viz import render_faces

    m = face3dkit.load_model("default")
    net = RNet(m.layout, "resnet18")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a network whose output is not the mean face
        for k in range(7):
            net.final_layers[k].bias.copy_(0.05 * torch.randn(net.final_layers[k].bias.shape, generator=g))
    path = net.save(tmp_path / "rnet.pt")
    back = RNet.load(path)
    assert back.layout == m.layout and back.backbone_name == "resnet18"
    # A scene: a rendered face and its landmarks.
    photos = tmp_path / "photos"
    photos.mkdir()
    c = m.sample(1, generator=torch.Generator().manual_seed(4), id_scale=0.6, tex_scale=0.6)
    c.angles[:, 1] = math.radians(15.0)
    cam = PerspectiveCamera(focal=1015 * 320 / 224, cx=160.0, cy=160.0, image_size=(320, 320))
    Image.fromarray(render_faces(m, c, camera=cam, background=0.5)[0]).save(photos / "face.png")
    with torch.no_grad():
        np.save(photos / "face.npy", m(c, camera=cam).landmarks2d[0].numpy())
    base = ["reconstruct", str(photos), "--landmarks", "file", "--landmark-iters", "10", "--iters", "2",
            "--save", "npz,pose", "--no-progress", "--threads", "1"]
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "o1"), "--method", "rnet", "--rnet", str(path)])
    assert r.exit_code == 0, r.output
    coeffs = np.load(tmp_path / "o1" / "face" / "face.npz")["coeffs"]
    biases = torch.cat([net.final_layers[k].bias for k in range(7)]).detach().numpy()
    # The trained-from-zero heads' weights are zero: the regression is the biases, whatever the crop.
    np.testing.assert_allclose(coeffs.reshape(-1), biases, rtol=1e-5, atol=1e-6)
    marker = json.loads((tmp_path / "o1" / "face" / "face.done.json").read_text())
    assert marker["settings"]["method"] == "rnet" and marker["settings"]["rnet_sha256"]
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "o2"), "--method", "rnet+fit", "--rnet", str(path)])
    assert r.exit_code == 0, r.output
    fitted = np.load(tmp_path / "o2" / "face" / "face.npz")["coeffs"].reshape(-1)
    assert not np.allclose(fitted, biases)  # the fit moved from the regressed start
    # What rnet+fit starts from (no step taken): all the regression, or its pose with the prior's shape.
    pred = m.split(torch.from_numpy(biases)[None])
    for start in ("all", "pose"):
        out = tmp_path / f"start-{start}"
        r = CliRunner().invoke(main, [*base[:4], "--landmark-iters", "0", "--iters", "0", *base[8:], "-o", str(out),
                                      "--method", "rnet+fit", "--rnet", str(path), "--rnet-start", start])
        assert r.exit_code == 0, r.output
        got = m.split(torch.from_numpy(np.load(out / "face" / "face.npz")["coeffs"]).reshape(1, -1))
        for k in ("angles", "trans", "tex", "gamma"):
            torch.testing.assert_close(getattr(got, k), getattr(pred, k))
        for k in ("id", "exp"):
            want = getattr(pred, k) if start == "all" else torch.zeros_like(getattr(pred, k))
            torch.testing.assert_close(getattr(got, k), want)
        marker = json.loads((out / "face" / "face.done.json").read_text())
        assert marker["settings"]["rnet_start"] == start
    # --fast with rnet+fit: FitConfig.fast's stages (the full landmark stage, docs/benchmarks.md), the
    # iterations as given
    for extra, steps in (([], (150, 40)), (["--landmark-iters", "20", "--iters", "30"], (20, 30))):
        r = CliRunner().invoke(main, [*base[:4], *base[8:], "-o", str(tmp_path / f"fast{len(extra)}"), "--method",
                                      "rnet+fit", "--rnet", str(path), "--fast", *extra])
        assert r.exit_code == 0, r.output
        fit_settings = json.loads((tmp_path / f"fast{len(extra)}" / "face" / "face.done.json").read_text())
        fit_settings = fit_settings["settings"]["fit"]
        assert (fit_settings["landmark_iters"], fit_settings["photo_iters"], fit_settings["photo_faces"],
                fit_settings["photo_size"]) == (*steps, 10000, 64)
    bfm = RNet(BFM_LAYOUT, "resnet18").save(tmp_path / "bfm.pt")
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "o3"), "--method", "rnet", "--rnet", str(bfm)])
    assert r.exit_code == 1 and "does not fit model" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "o4"), "--method", "rnet"])
    assert r.exit_code != 0 and "needs an R-Net checkpoint" in r.output


@pytest.mark.parametrize(("backbone", "channels"), [("mobilenet_v2", 96), ("resnet18", 256)])
def test_forward_with_features_and_input_size(tmp_path, backbone, channels):
    """forward_with_features gives forward's coefficients and the stride-16 map; with input_size the
    network (and pooled_features) sees the antialiased resize of any crop, and save / load keeps it."""
    from torch.nn import functional as F

    m = face3dkit.load_model("default")
    torch.manual_seed(0)
    net = RNet(m.layout, backbone, input_size=64).eval()
    with torch.no_grad():
        for layer in net.final_layers:  # non-zero heads: the outputs depend on the image
            layer.weight.normal_(0, 0.01)
    assert net.feature_channels == channels
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y, f = net.forward_with_features(x)
        torch.testing.assert_close(y, net(x))
        small = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        torch.testing.assert_close(net(small), y, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.pooled_features(x), net.backbone(small), rtol=1e-5, atol=1e-6)
    assert y.shape == (2, m.layout.total) and f.shape == (2, channels, 4, 4)
    back = RNet.load(net.save(tmp_path / "r.pt")).eval()
    assert back.input_size == 64 and back.backbone_name == backbone
    with torch.no_grad():
        torch.testing.assert_close(back(x), y)
