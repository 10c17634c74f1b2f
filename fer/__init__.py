"""fer: facial-expression recognition with geometry from face3dkit.

* :mod:`fer.labels` - the canonical label order (neutral, anger, disgust, fear, happiness, sadness,
  surprise), dataset label mappings, yaw bins.
* :mod:`fer.data` - datasets (class folders, FER2013, RAF-DB, the synthetic face3dkit set) and
  expression sequences (:class:`fer.data.SequenceDataset`).
* :mod:`fer.conditioning` - pose + 68 landmarks per image (providers ``3dmm``, ``landmarks``, ``none``),
  cached on disk.
* :mod:`fer.models` - GGPI (Zhang et al., TIP 2020), TDGAN (Xie et al., TCSVT 2020), DR-GAN
  (Tran et al., CVPR 2017), MGLN (Yu et al., PRL 2020: global face module + landmark-placed part
  crops with an LSTM over frames), the plain CNN baseline (optionally fused with fitted geometry)
  and the geometry-coefficient MLP.
* :mod:`fer.train` - the trainer and :func:`fer.train.api.run_training` (one run, what ``fer train``
  does); :mod:`fer.evaluate` - metrics and reports; :func:`predict`, :func:`evaluate_run`,
  :func:`generate_pose` - using a trained run.

Command line: ``fer synth``, ``fer train``, ``fer evaluate``, ``fer predict``, ``fer generate``.
"""

from fer.inference import evaluate_run, generate_pose, predict
from fer.labels import EXPRESSIONS, NUM_CLASSES, YAW_BIN_NAMES

__all__ = ["EXPRESSIONS", "NUM_CLASSES", "YAW_BIN_NAMES", "evaluate_run", "generate_pose", "predict"]
