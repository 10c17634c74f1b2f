"""A synthetic expression set rendered with face3dkit's default model, and its Dataset.

The seven basic expressions are mapped onto a model's named expression units following the EMFACS
prototypes of Friesen & Ekman. For the default model (ICT-FaceKit's 53 ARKit-named blendshapes,
:data:`ARKIT_EXPRESSION_UNITS`) each action unit (AU) maps to the blendshapes ICT-FaceKit's README
pairs with it: AU1 browInnerUp, AU2 browOuterUp, AU4 browDown, AU5 eyeWide, AU6 cheekSquint, AU7
eyeSquint, AU9 noseSneer, AU10 mouthShrugUpper + mouthUpperUp, AU12 mouthSmile, AU15 mouthFrown,
AU16 mouthLowerDown, AU17 mouthShrugLower, AU20 mouthStretch, AU23/24 mouthPress, AU26/27 jawOpen,
AU43/45 eyeBlink (both sides, ``_L``/``_R`` = the subject's left/right):

===========  ==============================================================================
neutral      (none)
anger        AU4 + AU7 + AU23/24 (+ AU9 a little): brows down, lids tight, lips pressed
disgust      AU9 + AU10 + AU15/16 + AU4 (+ AU6): nose wrinkled, upper lip raised, brows down
fear         AU1 + AU2 + AU4 + AU5 + AU20 + AU26: brows up and drawn together, eyes wide, lips
             stretched, jaw slightly dropped
happiness    AU6 + AU12 (+ AU25/26 a little, so teeth show): cheeks raised, lip corners pulled
sadness      AU1 + AU4 + AU15 + AU17 (+ AU43 a little): inner brows up, lip corners down, lids
             drooping (the only class with a blink component)
surprise     AU1 + AU2 + AU5 + AU26/27: brows raised, eyes wide, jaw dropped
===========  ==============================================================================

Eyes are open with a random gaze (eyeLook* units, both eyes together); random nuisance units never
include blinks or gaze, so eyes close only where the expression has it, and teeth and the mouth
interior show whenever the jaw opens (the default model has them).

For the MakeHuman model (``load_model('makehuman')``, 34 MakeHuman units,
:data:`MAKEHUMAN_EXPRESSION_UNITS`) the same prototypes use its unit names:

===========  ==============================================================================
neutral      (none)
anger        brows lowered (AU4), lids tightened (AU7), lips pressed (AU23/24), nostrils flared
disgust      nose wrinkled (AU9), upper lip raised (AU10), brows lowered, lower lip down (AU15/16)
fear         inner + outer brows raised (AU1+2), upper lids raised (AU5), lips stretched (AU20),
             jaw slightly dropped (AU26)
happiness    lip corners pulled (AU12), cheeks raised narrowing the eyes (AU6)
sadness      inner brows raised (AU1), lip corners depressed (AU15), lids drooping
surprise     brows raised (AU1+2), upper lids raised (AU5), jaw dropped (AU26/27)
===========  ==============================================================================

(exact unit weights: :func:`expression_units_for`). Each image scales its prototype by a random
intensity, jitters every unit, and adds small random activations of a few other units (so that
neutral is not exactly zero and the classes overlap a little). Identity and albedo are drawn
from the model's PCA priors, lighting is random spherical harmonics, yaw is uniform in ±60°,
pitch in ±20°, roll in ±8°, and the distance varies a little. The set is deterministic for a
seed; identities are split into train and held-out test identities.

On disk (``fer synth OUT``)::

    OUT/images/000000.png ...      the renders (size x size RGB)
    OUT/labels.csv                 file,split,identity,label,expression,intensity,yaw,pitch,roll,
                                   lm0_x,lm0_y,...,lm67_x,lm67_y   (degrees; landmarks in pixels
                                   of the image, x right, y down, pixel centres at +0.5)
    OUT/meta.json                  generation settings, the unit mapping, timing; written last

Sequences (``fer synth --sequence T``, ``SynthConfig.sequence = T > 1``): each of the ``n`` drawn
faces is rendered T times with its expression ramped linearly from neutral to the peak
(``t / (T - 1)`` times the unit weights, t = 0 .. T-1; identity, pose, light, background and the
gaze (eyeLook* units) fixed),
as ``images/000000_0.png ... 000000_{T-1}.png``; ``labels.csv`` then has one row per frame, the
intensity column scaled by the ramp, and two more columns ``sequence`` (the face's number) and
``frame`` (t). :class:`SyntheticDataset` reads only the peak frames unless ``frames='all'``;
:class:`fer.data.SequenceDataset` groups all of them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from face3dkit.io.atomic import atomic_open, atomic_write_text
from face3dkit.io.image import save_image
from fer.data.base import FerDataset, file_digest, read_image_file
from fer.labels import EXPRESSIONS, NUM_CLASSES

__all__ = [
    "ARKIT_EXPRESSION_UNITS",
    "EXPRESSION_UNITS",
    "MAKEHUMAN_EXPRESSION_UNITS",
    "expression_units_for",
    "SYNTH_FORMAT",
    "SynthConfig",
    "SyntheticDataset",
    "expression_weights",
    "generate_synthetic",
    "is_synthetic_dir",
    "project_landmarks",
]

SYNTH_FORMAT = "fer-synthetic-v1"


def _both(stem: str, w: float) -> dict[str, float]:
    """``{'eye-left-slit': w, 'eye-right-slit': w}`` for stem ``'eye-{}-slit'``."""
    return {stem.format("left"): w, stem.format("right"): w}


def _lr(stem: str, w: float) -> dict[str, float]:
    """``{'browDown_L': w, 'browDown_R': w}`` for stem ``'browDown'``."""
    return {f"{stem}_L": w, f"{stem}_R": w}


#: Canonical expression -> {ARKit/ICT blendshape: weight at full intensity} (the default model).
ARKIT_EXPRESSION_UNITS: dict[str, dict[str, float]] = {
    "neutral": {},
    "anger": {**_lr("browDown", 1.0), **_lr("eyeSquint", 0.6), **_lr("mouthPress", 0.9), **_lr("noseSneer", 0.3),
              "mouthShrugLower": 0.3},
    "disgust": {**_lr("noseSneer", 1.0), "mouthShrugUpper": 0.8, **_lr("mouthUpperUp", 0.6),
                **_lr("mouthFrown", 0.4), **_lr("mouthLowerDown", 0.3), **_lr("browDown", 0.5),
                **_lr("cheekSquint", 0.4)},
    "fear": {**_lr("browInnerUp", 1.0), **_lr("browOuterUp", 0.5), **_lr("browDown", 0.35), **_lr("eyeWide", 1.0),
             **_lr("mouthStretch", 1.0), "jawOpen": 0.3},
    "happiness": {**_lr("mouthSmile", 1.0), **_lr("cheekSquint", 0.7), **_lr("eyeSquint", 0.25), "jawOpen": 0.15},
    "sadness": {**_lr("browInnerUp", 1.0), **_lr("browDown", 0.3), **_lr("mouthFrown", 1.0), "mouthShrugLower": 0.5,
                **_lr("eyeBlink", 0.25)},
    "surprise": {**_lr("browInnerUp", 1.0), **_lr("browOuterUp", 1.0), **_lr("eyeWide", 1.0), "jawOpen": 0.7},
}

#: Units that random nuisance activations never touch (blinks and gaze are drawn on purpose).
_NO_NUISANCE = ("eyeBlink", "eyeLook", "eye-left-closure", "eye-right-closure")

#: Canonical expression -> {MakeHuman expression unit: weight at full intensity} (the MakeHuman model).
MAKEHUMAN_EXPRESSION_UNITS: dict[str, dict[str, float]] = {
    "neutral": {},
    "anger": {**_both("eyebrows-{}-down", 1.0), **_both("eye-{}-slit", 0.6), "mouth-compression": 1.0,
              "mouth-pursing": 0.3, **_both("nose-{}-dilatation", 0.7)},
    "disgust": {**_both("nose-{}-elevation", 1.0), "nose-compression": 0.5, "mouth-elevation": 1.0,
                "mouth-depression-retraction": 0.4, **_both("eyebrows-{}-down", 0.6), **_both("eye-{}-slit", 0.4)},
    "fear": {**_both("eyebrows-{}-inner-up", 1.0), **_both("eyebrows-{}-up", 0.5), **_both("eye-{}-opened-up", 1.0),
             "mouth-retraction": 1.0, "mouth-open": 0.35, "neck-platysma": 0.6},
    "happiness": {"mouth-corner-puller": 1.0, "mouth-upward-retraction": 0.5, **_both("eye-{}-slit", 0.6)},
    "sadness": {**_both("eyebrows-{}-inner-up", 1.0), "mouth-depression": 1.0, "mouth-eversion": 0.3,
                **_both("eye-{}-closure", 0.35)},
    "surprise": {**_both("eyebrows-{}-up", 1.0), **_both("eye-{}-opened-up", 1.0), "mouth-open": 0.8},
}

#: Back-compatible name: the default model's mapping.
EXPRESSION_UNITS = ARKIT_EXPRESSION_UNITS


def expression_units_for(exp_names: list[str]) -> dict[str, dict[str, float]]:
    """The EMFACS unit mapping that fits a model's expression names (ARKit/ICT or MakeHuman)."""
    if "jawOpen" in exp_names:
        return ARKIT_EXPRESSION_UNITS
    if "mouth-open" in exp_names:
        return MAKEHUMAN_EXPRESSION_UNITS
    raise ValueError("no EMFACS mapping for this model's expression units (need ARKit names such as 'jawOpen' "
                     "or MakeHuman names such as 'mouth-open'); pass SynthConfig(units=...)")


@dataclass
class SynthConfig:
    """Settings of :func:`generate_synthetic`.

    Attributes:
        n: number of images (balanced over the 7 classes).
        size: image side in pixels (the default camera rescaled to it).
        seed: everything random derives from it.
        n_identities: number of subjects (default ``max(10, n // 14)``: two images per class each).
        test_fraction: fraction of identities held out as the test split.
        yaw_max, pitch_max, roll_max: uniform pose ranges in degrees (±).
        intensity: uniform range of the expression intensity (scales the prototype).
        unit_jitter: each prototype unit is multiplied by U(1 - j, 1 + j).
        nuisance_units, nuisance_max: that many random units get U(0, max) on top.
        tex_scale: albedo PCA coefficients ~ N(0, tex_scale^2) (the extremes look unnatural).
        light_dc, light_dir: SH DC offset range (±) and maximum first-band strength.
        distance: range of the camera distance in model units (the default camera sits at 10).
        render_batch: faces per render call (fixed so that a seed gives identical bytes).
        units: class -> {unit: weight} mapping (default: :func:`expression_units_for` the model).
        gaze_max: with eyeLook* units, horizontal / vertical gaze drawn from U(-g, g) (unit weights).
        sequence: frames per face, neutral -> peak (1: still images; see the module docstring).
    """

    n: int = 7000
    size: int = 128
    seed: int = 0
    n_identities: int | None = None
    test_fraction: float = 0.2
    yaw_max: float = 60.0
    pitch_max: float = 20.0
    roll_max: float = 8.0
    intensity: tuple[float, float] = (0.6, 1.0)
    unit_jitter: float = 0.2
    nuisance_units: int = 2
    nuisance_max: float = 0.2
    tex_scale: float = 0.6
    light_dc: float = 0.25
    light_dir: float = 0.4
    distance: tuple[float, float] = (10.5, 11.5)
    render_batch: int = 64
    units: dict[str, dict[str, float]] | None = None
    gaze_max: tuple[float, float] = (0.4, 0.3)
    sequence: int = 1

    def identities(self) -> int:
        """The number of identities actually used."""
        return int(self.n_identities) if self.n_identities else max(10, self.n // 14)

    def key(self) -> str:
        """Short digest of every setting (names a cached synthetic set)."""
        d = asdict(self)
        if d["sequence"] == 1:
            del d["sequence"]  # still-image sets keep the keys they had before sequences existed
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def expression_weights(exp_names: list[str], label: int, units: dict[str, dict[str, float]] | None = None
                       ) -> np.ndarray:
    """(n_exp,) full-intensity unit weights of canonical class ``label`` for a model's unit names."""
    units = units or expression_units_for(exp_names)
    out = np.zeros(len(exp_names), np.float32)
    for name, w in units[EXPRESSIONS[label]].items():
        if name not in exp_names:
            raise KeyError(f"expression unit {name!r} not in the model (known: {', '.join(exp_names)})")
        out[exp_names.index(name)] = w
    return out


def _sample_parameters(cfg: SynthConfig, exp_names: list[str], n_id: int, n_tex: int) -> dict[str, np.ndarray]:
    """Every random quantity of the set, drawn up front from one generator (batch-size independent)."""
    rng = np.random.default_rng(cfg.seed)
    n, k = cfg.n, cfg.identities()
    if n < NUM_CLASSES:
        raise ValueError(f"n must be at least {NUM_CLASSES}, got {n}")
    idx = np.arange(n)
    identity = idx % k
    label = (idx // k) % NUM_CLASSES
    # Every identity cycles through the classes; offset per identity so small sets stay balanced.
    label = (label + identity) % NUM_CLASSES
    ids = rng.standard_normal((k, n_id)).astype(np.float32)
    tex = (rng.standard_normal((k, n_tex)) * cfg.tex_scale).astype(np.float32)
    n_test = max(1, round(k * cfg.test_fraction)) if cfg.test_fraction > 0 else 0
    test_ids = set(rng.permutation(k)[:n_test].tolist())
    units = cfg.units or expression_units_for(exp_names)
    protos = np.stack([expression_weights(exp_names, c, units) for c in range(NUM_CLASSES)])
    intensity = rng.uniform(*cfg.intensity, n).astype(np.float32)
    jitter = rng.uniform(1 - cfg.unit_jitter, 1 + cfg.unit_jitter, (n, len(exp_names))).astype(np.float32)
    exp = protos[label] * intensity[:, None] * jitter
    arkit = "jawOpen" in exp_names
    allowed = np.asarray([i for i, u in enumerate(exp_names) if not (arkit and u.startswith(_NO_NUISANCE))])
    for _ in range(cfg.nuisance_units):
        which = allowed[rng.integers(0, len(allowed), n)]
        exp[idx, which] += rng.uniform(0, cfg.nuisance_max, n).astype(np.float32)
    yaw = rng.uniform(-cfg.yaw_max, cfg.yaw_max, n)
    pitch = rng.uniform(-cfg.pitch_max, cfg.pitch_max, n)
    roll = rng.uniform(-cfg.roll_max, cfg.roll_max, n)
    gamma = np.zeros((n, 27), np.float32)
    dc = rng.uniform(-cfg.light_dc, cfg.light_dc, n)
    tint = rng.normal(0, 0.04, (n, 3))
    direction = rng.standard_normal((n, 3))
    direction[:, 2] = np.abs(direction[:, 2])  # light from the camera's hemisphere
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    strength = rng.uniform(0, cfg.light_dir, n)
    band2 = rng.normal(0, 0.05, (n, 5))
    for ch in range(3):
        o = 9 * ch
        gamma[:, o] = dc + tint[:, ch]
        gamma[:, o + 1] = -direction[:, 1] * strength
        gamma[:, o + 2] = direction[:, 2] * strength
        gamma[:, o + 3] = direction[:, 0] * strength
        gamma[:, o + 4:o + 9] = band2
    dist = rng.uniform(*cfg.distance, n)
    trans = np.stack([rng.normal(0, 0.05, n), rng.normal(0, 0.05, n), 10.0 - dist], 1).astype(np.float32)
    order = rng.permutation(n)  # render order: batches mix classes (the background is per batch)
    n_batches = math.ceil(n / cfg.render_batch)
    background = rng.uniform(0.1, 0.9, n_batches).astype(np.float32)
    held = np.zeros(len(exp_names), np.float32)  # units a sequence does not ramp (the gaze)
    if all(f"eyeLook{d}_{s}" in exp_names for d in ("In", "Out", "Up", "Down") for s in "LR"):
        # gaze: +h = towards the subject's left (left eye looks out, right eye looks in), +v = up
        h = rng.uniform(-cfg.gaze_max[0], cfg.gaze_max[0], n)
        v = rng.uniform(-cfg.gaze_max[1], cfg.gaze_max[1], n)
        col = {u: i for i, u in enumerate(exp_names)}
        for name, val in (("eyeLookOut_L", h), ("eyeLookIn_R", h), ("eyeLookIn_L", -h), ("eyeLookOut_R", -h),
                          ("eyeLookUp_L", v), ("eyeLookUp_R", v), ("eyeLookDown_L", -v), ("eyeLookDown_R", -v)):
            exp[:, col[name]] = np.maximum(val, 0.0)
            held[col[name]] = 1.0
    return {
        "identity": identity, "label": label, "id": ids, "tex": tex, "exp": exp.astype(np.float32),
        "intensity": intensity, "angles": np.stack([pitch, yaw, roll], 1).astype(np.float32), "gamma": gamma,
        "trans": trans, "order": order, "background": background, "held": held,
        "test": np.array([i in test_ids for i in range(k)]),
    }


def project_landmarks(model: torch.nn.Module, c: Any, camera: Any) -> torch.Tensor:
    """(B, 68, 2) pixel landmarks of coefficients ``c``, evaluating only the 68 landmark vertices."""
    return camera.project(model.posed_points(c, model.landmark_idx)[0])


def is_synthetic_dir(path: str | Path) -> bool:
    """True when ``path`` holds a complete synthetic set (meta.json of this format + labels.csv)."""
    p = Path(path)
    meta = p / "meta.json"
    if not (meta.is_file() and (p / "labels.csv").is_file()):
        return False
    try:
        return json.loads(meta.read_text()).get("format") == SYNTH_FORMAT
    except (OSError, ValueError):
        return False


def generate_synthetic(out: str | Path, config: SynthConfig | None = None, model: torch.nn.Module | None = None,
                       progress: bool = True) -> dict:
    """Render the synthetic expression set into ``out`` (see the module docstring for the layout).

    Args:
        out: output folder (created; existing files of the same names are overwritten).
        config: :class:`SynthConfig`.
        model: a morphable model with named expression units (default: ``load_model('default')``).
        progress: show a tqdm bar.

    Returns:
        The contents of ``meta.json`` (settings, counts per split, ``seconds``).
    """
    from tqdm import tqdm

    import face3dkit
    from face3dkit.geometry import PerspectiveCamera
    from face3dkit.model.coefficients import Coefficients
    from face3dkit.viz import render_faces

    cfg = config or SynthConfig()
    t0 = time.perf_counter()
    model = model if model is not None else face3dkit.load_model("default")
    if model.exp_names is None:
        raise ValueError("the synthetic set needs a model with named expression units (the default model)")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta_path.unlink()  # an interrupted regeneration must not look complete
    prm = _sample_parameters(cfg, list(model.exp_names), model.n_id, model.n_tex)
    n = cfg.n
    steps = int(cfg.sequence)
    if steps < 1:
        raise ValueError(f"sequence must be >= 1 frames, got {steps}")
    ramp = np.linspace(0.0, 1.0, steps) if steps > 1 else np.ones(1)
    cam = PerspectiveCamera.for_image_size(cfg.size)
    dev, dtype = model.mean_shape.device, model.mean_shape.dtype
    landmarks = np.zeros((n, steps, 68, 2), np.float32)
    order = prm["order"]
    bar = tqdm(total=n * steps, desc="rendering", unit="img", disable=not progress)
    with torch.no_grad():
        for b, start in enumerate(range(0, n, cfg.render_batch)):
            sel = order[start:start + cfg.render_batch]
            t = lambda a: torch.as_tensor(a, device=dev, dtype=dtype)  # noqa: E731
            c = Coefficients(id=t(prm["id"][prm["identity"][sel]]), exp=t(prm["exp"][sel]),
                             tex=t(prm["tex"][prm["identity"][sel]]), angles=t(np.deg2rad(prm["angles"][sel])),
                             gamma=t(prm["gamma"][sel]), trans=t(prm["trans"][sel]))
            peak_exp = c.exp
            held = t(prm["held"])  # (n_exp,) 1 for units the ramp leaves alone (gaze)
            for t_i, frac in enumerate(ramp):
                c.exp = peak_exp * (held + (1 - held) * float(frac))
                images = render_faces(model, c, size=cfg.size, background=float(prm["background"][b]), camera=cam)
                landmarks[sel, t_i] = project_landmarks(model, c, cam).float().cpu().numpy()
                for j, i in enumerate(sel):
                    name = f"{i:06d}.png" if steps == 1 else f"{i:06d}_{t_i}.png"
                    save_image(images[j], out / "images" / name, compress_level=3)
                bar.update(len(sel))
    bar.close()
    split = np.where(prm["test"][prm["identity"]], "test", "train")
    ang = prm["angles"]
    with atomic_open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        seq_cols = ["sequence", "frame"] if steps > 1 else []
        w.writerow(["file", "split", "identity", "label", "expression", "intensity", "yaw", "pitch", "roll",
                    *[f"lm{k}_{a}" for k in range(68) for a in ("x", "y")], *seq_cols])
        for i in range(n):
            for t_i, frac in enumerate(ramp):
                name = f"images/{i:06d}.png" if steps == 1 else f"images/{i:06d}_{t_i}.png"
                w.writerow([name, split[i], int(prm["identity"][i]), int(prm["label"][i]),
                            EXPRESSIONS[prm["label"][i]], f"{prm['intensity'][i] * frac:.4f}", f"{ang[i, 1]:.4f}",
                            f"{ang[i, 0]:.4f}", f"{ang[i, 2]:.4f}",
                            *[f"{v:.4f}" for v in landmarks[i, t_i].reshape(-1)], *([i, t_i] if steps > 1 else [])])
    seconds = time.perf_counter() - t0
    meta = {
        "format": SYNTH_FORMAT,
        "config": asdict(cfg),
        "key": cfg.key(),
        "model": model.meta.get("name", "?"),
        "n": n,
        "n_identities": cfg.identities(),
        "counts": {s: int((split == s).sum()) for s in ("train", "test")},
        "frames_per_face": steps,  # counts are of faces: sequences of that many images
        "test_identities": sorted(int(i) for i in np.flatnonzero(prm["test"])),
        "labels": list(EXPRESSIONS),
        "units": cfg.units or expression_units_for(list(model.exp_names)),
        "seconds": round(seconds, 2),
    }
    atomic_write_text(meta_path, json.dumps(meta, indent=2))  # last: it marks the set complete
    return meta


class SyntheticDataset(FerDataset):
    """The synthetic set written by :func:`generate_synthetic`.

    Args:
        root: the set's folder (holding ``labels.csv`` and ``images/``).
        split: ``'train'``, ``'test'`` (held-out identities) or None (all).
        image_size: side of returned images (default: the rendered size).
        frames: for sequence sets, ``'peak'`` (the last frame of each sequence) or ``'all'``
            (every frame; ``sequence_ids`` / ``frame_numbers`` say which is which).

    ``true_pose`` and ``known_landmarks`` come from the csv. Bad rows are reported with the csv
    line and skipped; missing images too.
    """

    name = "synthetic"

    def __init__(self, root: str | Path, split: str | None = None, image_size: int | None = None,
                 frames: str = "peak") -> None:
        super().__init__(image_size)
        root = Path(root)
        if split not in (None, "train", "test"):
            raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
        if frames not in ("peak", "all"):
            raise ValueError(f"frames must be 'peak' or 'all', got {frames!r}")
        csv_path = root / "labels.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{root}: no labels.csv (not a synthetic set; make one with `fer synth`)")
        self.root = root
        self.paths: list[str] = []
        labels, ids, poses, lms, seq = [], [], [], [], []
        src = str(csv_path)
        with open(csv_path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or header[:4] != ["file", "split", "identity", "label"]:
                raise ValueError(f"{csv_path}: not a fer synthetic labels.csv")
            col = {h: i for i, h in enumerate(header)}
            lm_cols = [col[f"lm{k}_{a}"] for k in range(68) for a in ("x", "y")]
            has_seq = "sequence" in col and "frame" in col
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    self.report.add(src, line, f"{len(row)} fields, expected {len(header)}")
                    continue
                if split is not None and row[col["split"]] != split:
                    continue
                try:
                    lab = int(row[col["label"]])
                    ident = int(row[col["identity"]])
                    pose = [float(row[col[k]]) for k in ("yaw", "pitch", "roll")]
                    lm = np.array([float(row[c]) for c in lm_cols], np.float32).reshape(68, 2)
                    sf = (int(row[col["sequence"]]), int(row[col["frame"]])) if has_seq else (-1, -1)
                except ValueError as e:
                    self.report.add(src, line, f"bad value ({e})")
                    continue
                if not 0 <= lab < NUM_CLASSES:
                    self.report.add(src, line, f"label {lab} outside 0..{NUM_CLASSES - 1}")
                    continue
                if not np.isfinite(lm).all() or not np.isfinite(pose).all():
                    self.report.add(src, line, "non-finite pose or landmarks")
                    continue
                p = root / row[col["file"]]
                if not p.is_file():
                    self.report.add(src, line, f"image {p} not found")
                    continue
                self.paths.append(str(p))
                labels.append(lab)
                ids.append(ident)
                poses.append(pose)
                lms.append(lm)
                seq.append(sf)
        n = len(labels)
        self.labels = np.asarray(labels, np.int64)
        self.identities = np.asarray(ids, np.int64)
        self.sources = list(self.paths)
        self.true_pose = np.asarray(poses, np.float32).reshape(n, 3)
        self.known_landmarks = np.stack(lms) if lms else np.zeros((0, 68, 2), np.float32)
        self.landmark_convention = "3d"  # projections of the model's fixed landmark vertices
        sf_arr = np.asarray(seq, np.int64).reshape(n, 2)
        self.sequence_ids, self.frame_numbers = sf_arr[:, 0].copy(), sf_arr[:, 1].copy()
        self._finish()
        if frames == "peak" and (self.sequence_ids >= 0).any():
            last: dict[int, int] = {}
            for s_id, f_no in zip(self.sequence_ids.tolist(), self.frame_numbers.tolist(), strict=True):
                last[s_id] = max(last.get(s_id, f_no), f_no)
            self.subset([i for i, (s_id, f_no) in enumerate(zip(self.sequence_ids.tolist(),
                                                                 self.frame_numbers.tolist(), strict=True))
                         if s_id < 0 or f_no == last[s_id]])

    def _decode(self, i: int) -> np.ndarray:
        return read_image_file(self.paths[i])

    def content_key(self, i: int) -> str:
        h = hashlib.sha256(bytes.fromhex(file_digest(self.paths[i])))
        h.update(np.ascontiguousarray(self.known_landmarks[i], np.float32).tobytes())  # type: ignore[index]
        return h.hexdigest()

    def _image_file(self, i: int) -> str:
        return self.paths[i]

    def _subset_extra(self, keep: np.ndarray) -> None:
        self.paths = [self.paths[int(k)] for k in keep]
        self.sequence_ids = self.sequence_ids[keep]
        self.frame_numbers = self.frame_numbers[keep]
