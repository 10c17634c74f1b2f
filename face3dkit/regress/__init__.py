"""Learned reconstruction: coefficient regressors (:class:`face3dkit.nets.RNet`) trained with
Deng et al.'s weakly-supervised hybrid loss (:mod:`face3dkit.regress.hybrid`)."""

from face3dkit.regress.hybrid import HybridLossConfig, hybrid_loss, rnet_train_step

__all__ = ["HybridLossConfig", "hybrid_loss", "rnet_train_step"]
