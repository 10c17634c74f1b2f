"""Plain-torch networks whose ``state_dict`` keys match published checkpoints.

* :mod:`.iresnet` - ArcFace iResNet-18/34/50/100 (insightface ``arcface_torch`` ``backbone.pth``),
  identity features for the perceptual loss; :func:`load_iresnet`.
* :mod:`.resnet` - torchvision ResNet-18/34/50/101 (logits or pooled features);
  :func:`load_torchvision_weights`.
* :mod:`.mobilenet` - torchvision MobileNetV2 (logits, pooled features, stride-16 map).
* :mod:`.vgg` - torchvision VGG16 / VGG16-BN with named intermediate feature maps.
* :mod:`.deform_conv` - deformable convolution v1/v2 (torchvision / mmcv layouts).
* :mod:`.mtcnn` - MTCNN's P-Net, R-Net, O-Net (facenet-pytorch ``pnet.pt`` / ``rnet.pt`` / ``onet.pt``);
  :func:`load_mtcnn_nets` (MTCNN's R-Net is ``face3dkit.nets.mtcnn.RNet``).
* :mod:`.rnet` - :class:`RNet`, Deng et al.'s coefficient regression network (ResNet backbone,
  one zero-initialised 1 x 1 head per coefficient block; Deep3DFaceRecon_pytorch ``net_recon`` keys).
* :mod:`.cnet` - :class:`CNet`, Deng et al.'s confidence network (identity / albedo aggregation over
  photos of one person, :func:`aggregate`).

Networks take ``(B, C, H, W)`` tensors as ``torch.nn`` does (see ``docs/conventions.md``).
No weights are downloaded: loaders read files the user already has.
"""

from ._checkpoint import (
    CheckpointMismatchError,
    load_checked_state_dict,
    read_state_dict,
    state_dict_mismatch,
)
from .cnet import CNET_FORMAT, CNet, aggregate
from .deform_conv import DeformConv2d, DeformConv2dPack, ModulatedDeformConv2dPack, deform_conv2d
from .iresnet import (
    IRESNET_LAYERS,
    IBasicBlock,
    IResNet,
    build_iresnet,
    detect_iresnet_arch,
    iresnet18,
    iresnet34,
    iresnet50,
    iresnet100,
    load_iresnet,
)
from .mobilenet import InvertedResidual, MobileNetV2, mobilenet_v2
from .mtcnn import ONet, PNet, find_mtcnn_weights, load_mtcnn_nets, mtcnn_normalize
from .resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BasicBlock,
    Bottleneck,
    ResNet,
    imagenet_normalize,
    load_torchvision_weights,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
)
from .rnet import BFM_LAYOUT, RNET_BACKBONES, RNet
from .vgg import VGG, VGG16_CFG, vgg16, vgg16_bn, vgg_layer_names

__all__ = [
    "BFM_LAYOUT",
    "RNET_BACKBONES",
    "RNet",
    "CNET_FORMAT",
    "CNet",
    "aggregate",
    "CheckpointMismatchError",
    "read_state_dict",
    "state_dict_mismatch",
    "load_checked_state_dict",
    "IBasicBlock",
    "IResNet",
    "IRESNET_LAYERS",
    "build_iresnet",
    "detect_iresnet_arch",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "load_iresnet",
    "BasicBlock",
    "Bottleneck",
    "InvertedResidual",
    "MobileNetV2",
    "mobilenet_v2",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_normalize",
    "load_torchvision_weights",
    "VGG",
    "VGG16_CFG",
    "vgg16",
    "vgg16_bn",
    "vgg_layer_names",
    "deform_conv2d",
    "DeformConv2d",
    "DeformConv2dPack",
    "ModulatedDeformConv2dPack",
    "PNet",
    "ONet",
    "find_mtcnn_weights",
    "load_mtcnn_nets",
    "mtcnn_normalize",
]
