"""Learned reconstruction: coefficient regressors (:class:`face3dkit.nets.RNet`) trained with
Deng et al.'s weakly-supervised hybrid loss (:mod:`face3dkit.regress.hybrid`) on randomised
synthetic renders (:mod:`face3dkit.regress.synthetic`), in run folders (:mod:`face3dkit.regress.train`)."""

from face3dkit.regress.cnet import (
    CNetRunError,
    CNetTrainConfig,
    aggregate_coefficients,
    cnet_loss,
    cnet_train_step,
    identity_sets,
    train_cnet,
)
from face3dkit.regress.hybrid import HybridLossConfig, hybrid_loss, rnet_train_step
from face3dkit.regress.synthetic import (
    SyntheticFaces,
    batch_generator,
    render_synthetic,
    sample_coefficients,
    synthetic_batch,
)
from face3dkit.regress.train import RNetTrainConfig, train_rnet

__all__ = ["HybridLossConfig", "RNetTrainConfig", "SyntheticFaces", "batch_generator", "hybrid_loss",
           "render_synthetic", "rnet_train_step", "sample_coefficients", "synthetic_batch", "train_rnet"]
__all__ += ["CNetRunError", "CNetTrainConfig", "aggregate_coefficients", "cnet_loss", "cnet_train_step",
            "identity_sets", "train_cnet"]
