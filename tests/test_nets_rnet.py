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
