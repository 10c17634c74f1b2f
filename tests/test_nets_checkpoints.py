"""Key names, shapes and parameter counts of the checkpoint-compatible networks, plus loading.

Big models are built on the ``meta`` device (no memory, no init cost) for key/shape/count checks;
only iResNet-18 and ResNet-18 are materialised for round trips.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from face3dkit.nets import (
    IRESNET_LAYERS,
    CheckpointMismatchError,
    build_iresnet,
    detect_iresnet_arch,
    imagenet_normalize,
    iresnet18,
    load_iresnet,
    load_torchvision_weights,
    mobilenet_v2,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    vgg16,
    vgg16_bn,
)


def _meta(factory, *args, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return factory(*args, **kwargs)


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _randomize_(m: nn.Module, seed: int = 0) -> None:
    """Give every parameter and BN statistic non-trivial values (for meaningful round trips)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.is_floating_point():
                scale = 0.05 if t.dim() > 1 else 0.2
                t.copy_(torch.randn(t.shape, generator=g) * scale + (1.0 if "bn" in name else 0.0))


# ----------------------------------------------------------------------------------------------
# torchvision ResNet / VGG: counts from torchvision's documentation (models table "Params":
# resnet18 11.7M, resnet50 25.6M, vgg16 138.4M); exact values as printed by
# sum(p.numel() for p in torchvision.models.X().parameters()).
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("factory", "n_params", "n_state"),
    [
        (resnet18, 11_689_512, 122),
        (resnet34, 21_797_672, 218),
        (resnet50, 25_557_032, 320),
        (resnet101, 44_549_160, 626),
        (vgg16, 138_357_544, 32),
        (vgg16_bn, 138_365_992, 97),
        (mobilenet_v2, 3_504_872, 314),
    ],
)
def test_torchvision_param_counts(factory, n_params, n_state):
    m = _meta(factory)
    assert _n_params(m) == n_params
    assert len(m.state_dict()) == n_state


def test_mobilenet_v2_key_names_and_shapes():
    """torchvision's MobileNetV2 layout: features.0 = stem conv + BN, features.1 = the expansion-1
    block (depthwise ConvBNReLU, projection conv, BN), features.2..17 = expand / depthwise / project
    / BN, features.18 = the 1280-channel 1 x 1 ConvBNReLU, classifier.1 = the linear layer."""
    s = _shapes(_meta(mobilenet_v2))
    assert s["features.0.0.weight"] == (32, 3, 3, 3) and s["features.0.1.running_var"] == (32,)
    assert s["features.1.conv.0.0.weight"] == (32, 1, 3, 3) and s["features.1.conv.1.weight"] == (16, 32, 1, 1)
    assert s["features.1.conv.2.weight"] == (16,)
    assert s["features.2.conv.0.0.weight"] == (96, 16, 1, 1) and s["features.2.conv.1.0.weight"] == (96, 1, 3, 3)
    assert s["features.2.conv.2.weight"] == (24, 96, 1, 1) and s["features.2.conv.3.running_mean"] == (24,)
    assert s["features.17.conv.2.weight"] == (320, 960, 1, 1)
    assert s["features.18.0.weight"] == (1280, 320, 1, 1) and s["classifier.1.weight"] == (1000, 1280)
    assert not any(k.startswith("features.19") for k in s)


def test_resnet50_key_names_and_shapes():
    s = _shapes(_meta(resnet50))
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.weight": (64,),
        "bn1.running_mean": (64,),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.bn3.running_var": (256,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.weight": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer3.5.bn3.weight": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048),
        "fc.bias": (1000,),
    }
    for k, shape in expected.items():
        assert s[k] == shape, k
    assert "layer3.6.conv1.weight" not in s and "layer1.1.downsample.0.weight" not in s
    # the list starts and ends as torchvision's state_dict
    keys = list(s)
    assert keys[:6] == [
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    assert keys[-2:] == ["fc.weight", "fc.bias"]


def test_resnet18_key_names():
    s = _shapes(_meta(resnet18))
    assert s["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert s["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert s["layer4.1.bn2.weight"] == (512,)
    assert s["fc.weight"] == (1000, 512)
    assert "layer1.0.downsample.0.weight" not in s  # BasicBlock stage 1 has no projection
    assert "layer1.0.conv3.weight" not in s


def test_vgg16_key_names_and_shapes():
    s = _shapes(_meta(vgg16))
    conv_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    expected_keys = [f"features.{i}.{p}" for i in conv_idx for p in ("weight", "bias")]
    expected_keys += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert list(s) == expected_keys
    assert s["features.0.weight"] == (64, 3, 3, 3)
    assert s["features.10.weight"] == (256, 128, 3, 3)
    assert s["features.28.weight"] == (512, 512, 3, 3)
    assert s["classifier.0.weight"] == (4096, 25088)
    assert s["classifier.6.weight"] == (1000, 4096)


def test_vgg_feature_maps_and_features_only_loading(tmp_path):
    m = vgg16(with_classifier=False).eval()
    assert _n_params(m) == 14_714_688  # torchvision vgg16().features
    with pytest.raises(RuntimeError, match="with_classifier=False"):
        m(torch.rand(1, 3, 32, 32))
    # a full torchvision-layout checkpoint (classifier tensors on meta: no 500 MB file)
    src = vgg16(with_classifier=False)
    _randomize_(src, seed=3)
    sd = dict(src.state_dict())
    sd.update({k: v for k, v in _meta(vgg16).state_dict().items() if k.startswith("classifier.")})
    path = tmp_path / "vgg16.pth"
    torch.save(sd, path)
    msg = _one_line_error(load_torchvision_weights, m, path)
    assert "unexpected keys (6) [classifier.0.weight, classifier.0.bias" in msg
    load_torchvision_weights(m, path, exclude=("classifier.",))
    assert m.features[28].weight.equal(src.features[28].weight)

    x = torch.rand(1, 3, 32, 32)
    feats = m.feature_maps(x, ("relu1_2", "relu3_3"), normalize_input=True)
    assert list(feats) == ["relu1_2", "relu3_3"]
    assert feats["relu1_2"].shape == (1, 64, 32, 32)
    assert feats["relu3_3"].shape == (1, 256, 8, 8)
    ref = imagenet_normalize(x)
    for mod in list(m.features)[:16]:
        ref = mod(ref)
    torch.testing.assert_close(feats["relu3_3"], ref)
    assert (feats["relu1_2"] >= 0).all()
    with pytest.raises(ValueError, match="unknown VGG layer"):
        m.feature_maps(x, ("relu9_9",))


# ----------------------------------------------------------------------------------------------
# insightface iResNet. Expected parameter counts computed from the architecture definition in
# deepinsight/insightface recognition/arcface_torch/backbones/iresnet.py (see _iresnet_count,
# an independent re-derivation): r50 43,590,848 (~43.6M, backbone.pth ~174 MB in fp32),
# r100 65,156,160 (~65.2M, ~261 MB).
# ----------------------------------------------------------------------------------------------
def _iresnet_count(layers: tuple[int, ...]) -> tuple[int, int]:
    """(parameters, state_dict entries) from insightface's layer definitions."""

    def block(cin: int, c: int, down: bool) -> int:
        # bn1(cin) conv1 3x3 cin->c, bn2(c), prelu(c), conv2 3x3 c->c, bn3(c) [+ 1x1 conv + bn]
        n = 2 * cin + 9 * cin * c + 2 * c + c + 9 * c * c + 2 * c
        return n + (cin * c + 2 * c if down else 0)

    n, cin, entries = 3 * 64 * 9 + 2 * 64 + 64, 64, 7  # conv1, bn1, prelu
    for c, blocks in zip((64, 128, 256, 512), layers, strict=True):
        n += block(cin, c, True) + sum(block(c, c, False) for _ in range(blocks - 1))
        entries += 18 * blocks + 6  # 3 BN x 5 + 3 weights per block; downsample conv + BN
        cin = c
    n += 2 * 512 + (512 * 7 * 7 * 512 + 512) + 2 * 512  # bn2, fc, features (BatchNorm1d)
    return n, entries + 12


@pytest.mark.parametrize(
    ("arch", "n_params", "n_state"),
    [("r18", 24_025_600, 187), ("r34", 34_139_328, 331), ("r50", 43_590_848, 475),
     ("r100", 65_156_160, 925)],
)
def test_iresnet_param_counts(arch, n_params, n_state):
    m = _meta(build_iresnet, arch)
    assert _iresnet_count(IRESNET_LAYERS[arch]) == (n_params, n_state)
    assert _n_params(m) == n_params
    assert len(m.state_dict()) == n_state


def test_iresnet_key_names_match_insightface():
    s = _shapes(_meta(build_iresnet, "r50"))
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "bn1.weight": (64,),
        "bn1.running_var": (64,),
        "prelu.weight": (64,),
        "layer1.0.bn1.weight": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.0.bn2.weight": (64,),
        "layer1.0.prelu.weight": (64,),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.bn3.weight": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer1.0.downsample.1.running_mean": (64,),
        "layer2.0.bn1.weight": (64,),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer3.13.conv2.weight": (256, 256, 3, 3),
        "layer4.2.bn3.running_var": (512,),
        "bn2.weight": (512,),
        "fc.weight": (512, 25088),
        "fc.bias": (512,),
        "features.weight": (512,),
        "features.running_mean": (512,),
        "features.num_batches_tracked": (),
    }
    for k, shape in expected.items():
        assert s[k] == shape, k
    assert "layer3.14.conv1.weight" not in s and "layer1.1.downsample.0.weight" not in s
    assert "layer1.0.conv1.bias" not in s  # bias-free convs
    s100 = _shapes(_meta(build_iresnet, "r100"))
    assert "layer3.29.bn3.weight" in s100 and "layer3.30.bn3.weight" not in s100
    assert "layer2.12.prelu.weight" in s100


def test_detect_iresnet_arch():
    for arch in IRESNET_LAYERS:
        assert detect_iresnet_arch(_meta(build_iresnet, arch).state_dict()) == arch
    sd = {"layer1.0.conv1.weight": 0, "layer2.0.x": 0, "layer3.4.x": 0, "layer4.0.x": 0}
    assert detect_iresnet_arch(sd) == (1, 1, 5, 1)


@pytest.fixture(scope="module")
def r18_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = iresnet18()
    _randomize_(model)
    path = tmp_path_factory.mktemp("ckpt") / "backbone.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_iresnet_round_trip_and_embedding(r18_checkpoint):
    model, path = r18_checkpoint
    loaded = load_iresnet(path)  # auto-detects r18
    assert loaded.layers_cfg == IRESNET_LAYERS["r18"] and not loaded.training
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        out = loaded(x)
        ref = model(x)
    assert out.shape == (1, 512) and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert load_iresnet(path, arch="iresnet18").state_dict()["fc.bias"].equal(
        model.state_dict()["fc.bias"]
    )
    with pytest.raises(ValueError, match="expects"):
        loaded(torch.rand(1, 3, 64, 64))


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(CheckpointMismatchError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_iresnet_wrong_arch_missing_keys(tmp_path):
    path = tmp_path / "r50_backbone.pth"
    torch.save(_meta(build_iresnet, "r50").state_dict(), path)  # meta tensors: tiny file
    msg = _one_line_error(load_iresnet, path, arch="r100")
    assert msg.startswith(f"{path}: checkpoint does not fit iresnet r100: missing keys")
    assert "layer2.4." in msg
    msg = _one_line_error(load_iresnet, path, arch="r18")
    assert "unexpected keys (288) [layer1.2.bn1.weight" in msg


def test_iresnet_shape_mismatch_and_unexpected_key(tmp_path):
    sd = _meta(build_iresnet, "r50").state_dict()
    sd["fc.weight"] = torch.empty(512, 4608, device="meta")  # e.g. a 48x48-input model
    sd["margin.kernel"] = torch.empty(512, 10, device="meta")
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    msg = _one_line_error(load_iresnet, path)
    assert str(path) in msg and "iresnet r50" in msg
    assert "unexpected keys (1) [margin.kernel]" in msg
    assert "shape mismatch (1) [fc.weight: checkpoint (512, 4608) vs model (512, 25088)]" in msg


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "junk.pth"
    torch.save([1, 2, 3], path)
    assert "not a state_dict" in _one_line_error(load_iresnet, path)
    path2 = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, path2)
    assert "not an iresnet checkpoint" in _one_line_error(load_iresnet, path2)
    with pytest.raises(FileNotFoundError):
        load_iresnet(tmp_path / "missing.pth")


def test_torchvision_resnet_round_trip_features_and_exclude(tmp_path):
    torch.manual_seed(0)
    src = resnet18()
    _randomize_(src, seed=1)
    src.eval()
    path = tmp_path / "resnet18.pth"
    # DataParallel-style prefix is stripped by the loader
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    dst = load_torchvision_weights(resnet18(return_features=True), path).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = dst(x)
        assert feats.shape == (2, 512)
        torch.testing.assert_close(feats, src.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(dst.fc(feats), src(x), rtol=0, atol=0)
    # a 7-class FER head: the ImageNet fc does not fit ...
    msg = _one_line_error(load_torchvision_weights, resnet18(num_classes=7), path)
    assert msg.startswith(f"{path}: checkpoint does not fit ResNet: shape mismatch (2)")
    assert "fc.weight: checkpoint (1000, 512) vs model (7, 512)" in msg
    # ... unless it is excluded
    fer = resnet18(num_classes=7)
    fc_before = fer.fc.weight.clone()
    load_torchvision_weights(fer, path, exclude=("fc.",))
    assert fer.fc.weight.equal(fc_before) and fer.conv1.weight.equal(src.conv1.weight)


def test_torchvision_wrong_depth_message(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(_meta(resnet50).state_dict(), path)
    msg = _one_line_error(load_torchvision_weights, _meta(resnet34), path)
    assert "missing keys" not in msg  # every ResNet-34 key exists in ResNet-50
    assert "unexpected keys" in msg and "conv3" in msg and "shape mismatch" in msg
