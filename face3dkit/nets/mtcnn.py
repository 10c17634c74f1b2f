"""MTCNN's three cascaded networks (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", IEEE SPL 2016): P-Net, R-Net, O-Net.

The modules' ``state_dict`` keys and shapes are those of the files ``facenet-pytorch`` ships as
``facenet_pytorch/data/{pnet,rnet,onet}.pt`` (weights converted from the original Caffe models via
David Sandberg's TensorFlow port), so :func:`load_mtcnn_nets` loads them strictly. No weights are
bundled or downloaded: :func:`find_mtcnn_weights` locates an installed ``facenet-pytorch``
(``pip install --no-deps facenet-pytorch``) *without importing it* (it needs torchvision), or a
folder the user gives.

Inputs are ``(B, 3, H, W)`` RGB images scaled as ``(x - 127.5) / 128`` (:func:`mtcnn_normalize`).

- :class:`PNet`: fully convolutional proposal net. ``(B, 3, H, W)`` →
  ``reg (B, 4, H', W')`` box offsets and ``prob (B, 2, H', W')`` (softmax, channel 1 = face), with
  ``H' = ceil((H - 2) / 2) - 4``: output cell ``(i, j)`` sees the 12 × 12 input window whose
  top-left corner is ``(2 j, 2 i)``.
- :class:`RNet`: refines 24 × 24 crops → ``reg (N, 4)``, ``prob (N, 2)``.
- :class:`ONet`: 48 × 48 crops → ``reg (N, 4)``, ``points (N, 10)`` (5 x then 5 y, as fractions of
  the crop), ``prob (N, 2)``.

The dense layers of R-Net and O-Net flatten their input feature map in (W, H, C) order — the
memory order of the TensorFlow/Caffe models the weights come from — which
:func:`_flatten_whc` reproduces.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ._checkpoint import load_checked_state_dict, read_state_dict

__all__ = [
    "MTCNN_INSTALL_HINT",
    "MTCNN_WEIGHT_FILES",
    "ONet",
    "PNet",
    "RNet",
    "find_mtcnn_weights",
    "load_mtcnn_nets",
    "mtcnn_normalize",
]

#: File names of the three nets' weights in ``facenet_pytorch/data/``.
MTCNN_WEIGHT_FILES = {"pnet": "pnet.pt", "rnet": "rnet.pt", "onet": "onet.pt"}
MTCNN_INSTALL_HINT = ("install facenet-pytorch's weights with `pip install --no-deps facenet-pytorch` "
                      "(MIT licence; torchvision is not needed) or pass the folder holding pnet.pt, rnet.pt, onet.pt")


def mtcnn_normalize(images: Tensor) -> Tensor:
    """RGB images in [0, 255] (any float dtype) → MTCNN input ``(x - 127.5) / 128``."""
    return (images - 127.5) * 0.0078125


def _flatten_whc(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, W·H·C) flattened in (W, H, C) order (TensorFlow/Caffe dense layout)."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: conv3(10)-PReLU-pool2 - conv3(16)-PReLU - conv3(32)-PReLU - 1×1 heads.

    ``forward(x (B, 3, H, W)) -> (reg (B, 4, H', W'), prob (B, 2, H', W'))``; H, W ≥ 12.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement network on 24 × 24 crops: ``forward(x (N, 3, 24, 24)) -> (reg (N, 4), prob (N, 2))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output network on 48 × 48 crops:
    ``forward(x (N, 3, 48, 48)) -> (reg (N, 4), points (N, 10), prob (N, 2))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def _facenet_pytorch_data_dirs() -> list[Path]:
    """Candidate ``facenet_pytorch/data`` folders of an installed facenet-pytorch (never imported)."""
    dirs: list[Path] = []
    try:
        dist = importlib.metadata.distribution("facenet-pytorch")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or []:
            if f.name == "pnet.pt":
                dirs.append(Path(str(dist.locate_file(f))).parent)
    try:
        spec = importlib.util.find_spec("facenet_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for loc in spec.submodule_search_locations or []:
            dirs.append(Path(loc) / "data")
    return dirs


def find_mtcnn_weights(folder: str | os.PathLike | None = None) -> dict[str, Path] | None:
    """Paths of ``pnet.pt``, ``rnet.pt``, ``onet.pt``, or None when they cannot be found.

    Looked up in ``folder`` when given, else ``$FACE3DKIT_MTCNN_DIR``, else the ``data/`` folder of
    an installed ``facenet-pytorch`` (located through its package metadata / import spec without
    importing it).
    """
    if folder is not None:
        candidates = [Path(folder)]
    elif os.environ.get("FACE3DKIT_MTCNN_DIR"):
        candidates = [Path(os.environ["FACE3DKIT_MTCNN_DIR"])]
    else:
        candidates = _facenet_pytorch_data_dirs()
    for d in candidates:
        paths = {k: d / name for k, name in MTCNN_WEIGHT_FILES.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    return None


def load_mtcnn_nets(folder: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[PNet, RNet, ONet]:
    """P-Net, R-Net and O-Net with facenet-pytorch's weights loaded strictly, in eval mode.

    Args:
        folder: folder with ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (default: see :func:`find_mtcnn_weights`).
        device, dtype: where the nets live.

    Raises:
        FileNotFoundError: the weights are not found (one line with the install hint).
        face3dkit.nets.CheckpointMismatchError: a file does not fit its net (one line naming it).
    """
    paths = find_mtcnn_weights(folder)
    if paths is None:
        where = f"in {folder}" if folder is not None else "(facenet-pytorch not installed)"
        raise FileNotFoundError(f"MTCNN weights pnet.pt, rnet.pt, onet.pt not found {where}; {MTCNN_INSTALL_HINT}")
    nets: list[nn.Module] = []
    for key, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = cls()
        load_checked_state_dict(net, read_state_dict(paths[key]), str(paths[key]), f"MTCNN {key}")
        nets.append(net.to(device=device, dtype=dtype).eval())
    return nets[0], nets[1], nets[2]  # type: ignore[return-value]
