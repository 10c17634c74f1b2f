#!/usr/bin/env python3
"""Face-detection recall per yaw bin on synthetic renders: dlib HOG (upsample 0, 1, merged), dlib
CNN, MTCNN and their unions.

Renders the default model with random identity, expression, lighting and position like
``benchmarks/reconstruct.py`` (320 × 320, faces ~90-200 px), with |yaw| spread evenly over 0-90°
(sign random), pitch within ±15°, roll within ±10°. A detection *finds* a face when its box contains
the true nose tip (landmark 30) and its side is 0.4-2.5 times the side of the true 68-point box;
anything else is a false positive. Recall is reported per |yaw| bin, plus false positives and
seconds per image (CPU). Unions merge the members' boxes with IoU NMS (0.3), as
``DlibDetector(upsample=(0, 1))`` does.

``--fit-boxes`` prints the HOG box in terms of the MTCNN box of the same face (the numbers behind
``face3dkit.landmarks.mtcnn.MTCNN_TO_HOG_BOX``) and the NME of dlib's 68-point predictor in the
MTCNN box, the mapped box and the HOG box, with the agreement measure used to accept it
(``AGREEMENT``).

    python benchmarks/detect.py [--per-bin 10] [--seed 0] [--threads 2] [--no-cnn] [--fit-boxes]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from reconstruct import SIZE, make_scenes  # noqa: E402  (benchmarks/reconstruct.py, same folder)

import face3dkit
from face3dkit.landmarks import DetectorUnavailableError, DlibDetector, MTCNNDetector, lm68_to_lm5, nms
from face3dkit.sysinfo import machine_summary

BINS = (0, 15, 30, 45, 60, 75, 90)


def make_yaw_scenes(model, per_bin: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``per_bin`` renders in each |yaw| bin: images, (N, 68, 2) true landmarks, (N,) yaw degrees.

    The scenes of benchmarks/reconstruct.py (same identity, expression, lighting, position and
    background draws) with the yaw drawn per bin, sign random."""
    n = per_bin * (len(BINS) - 1)
    drawn: list[torch.Tensor] = []

    def yaw_deg(rnd, n: int) -> torch.Tensor:
        lo = torch.tensor(BINS[:-1], dtype=torch.float32).repeat_interleave(per_bin)
        drawn.append((lo + rnd(n) * 15) * torch.where(rnd(n) < 0.5, -1.0, 1.0))
        return drawn[0]

    imgs, lms, _ = make_scenes(model, n, seed, yaw_deg)
    return imgs, np.stack(lms).astype(np.float64), drawn[0].numpy()


def found(boxes: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(K,) bool: which of (K, 4) boxes find the face with true landmarks ``lm`` (68, 2)."""
    if len(boxes) == 0:
        return np.zeros(0, bool)
    nose = lm[30]
    side = max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]))
    inside = (boxes[:, 0] <= nose[0]) & (nose[0] <= boxes[:, 2]) & (boxes[:, 1] <= nose[1]) & (nose[1] <= boxes[:, 3])
    bs = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return inside & (bs >= 0.4 * side) & (bs <= 2.5 * side)


def union(*members: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Boxes of several detectors merged by IoU NMS (0.3), best score first (scores per member are
    ranked only within the member; the first member wins ties of the same face)."""
    boxes = np.concatenate([b for b, _ in members]) if members else np.zeros((0, 4))
    if len(boxes) == 0:
        return boxes
    # rank: member order first, then score within the member
    prio = np.concatenate([np.full(len(b), -k, float) * 1e3 + np.asarray(s, float) for k, (b, s) in
                           enumerate(members)])
    keep = nms(torch.as_tensor(boxes, dtype=torch.float64), torch.as_tensor(prio), 0.3)
    return boxes[keep.numpy()]


def hog_boxes(det: DlibDetector, img: np.ndarray, upsample: tuple[int, ...],
              scales: tuple[float, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    det.upsample, det.scales = upsample, tuple(scales)
    rects = det._rects(img)
    b = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r, _ in rects], float).reshape(-1, 4)
    return b, np.array([s for _, s in rects], float)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-bin", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-cnn", action="store_true", help="skip the (slow on CPU) dlib CNN detector")
    p.add_argument("--fit-boxes", action="store_true", help="MTCNN box -> HOG box statistics instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# machine: {machine_summary()}")
    t = time.perf_counter()
    imgs, lms, yaw = make_yaw_scenes(face3dkit.load_model("default"), args.per_bin, args.seed)
    print(f"# {len(imgs)} renders ({SIZE}px, seed {args.seed}) in {time.perf_counter() - t:.1f} s")
    hog = DlibDetector("hog")
    try:
        mt = MTCNNDetector(points="5")
    except DetectorUnavailableError as e:
        mt = None
        print(f"# MTCNN skipped: {e}")
    if args.fit_boxes:
        if mt is None:
            raise SystemExit("--fit-boxes needs the MTCNN weights")
        return fit_boxes(imgs, lms, hog, mt)
    cnn = None
    if not args.no_cnn:
        try:
            cnn = DlibDetector("cnn")
        except DetectorUnavailableError as e:
            print(f"# dlib CNN skipped: {e}")

    runs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    secs: dict[str, float] = {}

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        runs[name] = [fn(img) for img in imgs]
        secs[name] = (time.perf_counter() - t0) / len(imgs)

    timed("HOG u0", lambda im: hog_boxes(hog, im, (0,)))
    timed("HOG u1", lambda im: hog_boxes(hog, im, (1,)))
    timed("HOG u0+u1 (merged)", lambda im: hog_boxes(hog, im, (0, 1)))
    timed("HOG u0+u1+x1.5", lambda im: hog_boxes(hog, im, (0, 1), (1.5,)))
    if cnn is not None:
        timed("dlib CNN u0", lambda im: hog_boxes(cnn, im, (0,)))
        timed("dlib CNN u1", lambda im: hog_boxes(cnn, im, (1,)))
    if mt is not None:
        def mtcnn_boxes(im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            b, s, _ = mt.detect_boxes(im)
            return b.double().numpy(), s.double().numpy()
        timed("MTCNN", mtcnn_boxes)
        combos = [("HOG u0+u1", "MTCNN")]
        if cnn is not None:
            combos += [("HOG u0+u1", "dlib CNN u0")]
        for a, b in combos:
            ka = "HOG u0+u1 (merged)" if a == "HOG u0+u1" else a
            name = f"{a} ∪ {b}"
            runs[name] = [(union(x, y), np.zeros(0)) for x, y in zip(runs[ka], runs[b], strict=True)]
            secs[name] = secs[ka] + secs[b]

    absyaw = np.abs(yaw)
    heads = [f"{lo}-{hi}°" for lo, hi in zip(BINS[:-1], BINS[1:], strict=True)]
    print(f"# recall per |yaw| bin ({args.per_bin} faces each); FP = false detections in all {len(imgs)} images")
    print("| detector | " + " | ".join(heads) + " | all | FP | s/img |")
    print("|---|" + "---:|" * (len(heads) + 3))
    for name, res in runs.items():
        hit = np.array([found(b, lm).any() for (b, _), lm in zip(res, lms, strict=True)])
        fp = sum(int((~found(b, lm)).sum()) for (b, _), lm in zip(res, lms, strict=True))
        cells = []
        for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
            m = (absyaw >= lo) & (absyaw < hi)
            cells.append(f"{hit[m].sum()}/{m.sum()}")
        print(f"| {name} | " + " | ".join(cells) + f" | {hit.mean() * 100:.0f}% | {fp} | {secs[name]:.3f} |")


def _dist(a: np.ndarray, b: np.ndarray, norm: float) -> float:
    """Mean point distance of (K, 2) ``a`` and ``b`` over ``norm``."""
    return float(np.linalg.norm(a - b, axis=1).mean() / norm)


def fit_boxes(imgs: list[np.ndarray], lms: np.ndarray, hog: DlibDetector, mt: MTCNNDetector) -> None:
    import dlib

    from face3dkit.landmarks.mtcnn import AGREEMENT, MTCNN_TO_HOG_BOX, mtcnn_to_hog_box

    pred = hog._predictor

    def run_pred(img: np.ndarray, box: np.ndarray) -> np.ndarray:
        r = dlib.rectangle(*(int(round(v)) for v in box[:2]), *(int(round(v)) - 1 for v in box[2:]))
        sh = pred(img, r)
        return np.array([[sh.part(i).x, sh.part(i).y] for i in range(68)], float) + 0.5

    rel, rel5, rows = [], [], []
    for img, lm in zip(imgs, lms, strict=True):
        b, _, pts5 = (t.double().numpy() for t in mt.detect_boxes(img))
        ok = [k for k in range(len(b)) if found(b[k:k + 1], lm)[0]]
        if not ok:
            continue
        mb, m5 = b[ok[0]], pts5[ok[0]]
        iod = float(np.linalg.norm(lm[36] - lm[45]))
        eye = float(np.linalg.norm(m5[1] - m5[0]))
        raw, mp = run_pred(img, mb), run_pred(img, mtcnn_to_hog_box(mb, m5))
        hb, _ = hog_boxes(hog, img, (0, 1))
        hk = [k for k in range(len(hb)) if found(hb[k:k + 1], lm)[0]]
        t5 = lm68_to_lm5(lm)
        row = [_dist(raw, lm, iod), _dist(mp, lm, iod), _dist(lm68_to_lm5(mp), m5, eye), float("nan"),
               _dist(m5, t5, iod), _dist(lm68_to_lm5(mp), t5, iod)]
        if hk:
            h = hb[hk[0]]
            w = mb[2] - mb[0]
            rel.append((((h[0] + h[2]) - (mb[0] + mb[2])) / 2 / w, ((h[1] + h[3]) - (mb[1] + mb[3])) / 2 / w,
                        (h[2] - h[0]) / w))
            row[3] = _dist(run_pred(img, h), lm, iod)
            em = (m5[0] + m5[1]) / 2
            dm = np.linalg.norm((m5[3] + m5[4]) / 2 - em)
            cen = m5.mean(0)
            rel5.append((((h[0] + h[2]) / 2 - cen[0]) / dm, ((h[1] + h[3]) / 2 - cen[1]) / dm, (h[2] - h[0]) / dm))
        rows.append(row)
    r = np.array(rel)
    a = np.array(rows)
    print(f"# MTCNN found {len(a)} faces, HOG u0+u1 {len(r)} of them; library MTCNN_TO_HOG_BOX = {MTCNN_TO_HOG_BOX}")
    print("| HOG box vs MTCNN box | dx (widths) | dy (widths) | scale |")
    print("|---|---|---|---|")
    print("| median | " + " | ".join(f"{v:.3f}" for v in np.median(r, 0)) + " |")
    print("| std | " + " | ".join(f"{v:.3f}" for v in r.std(0)) + " |")
    r5 = np.array(rel5)
    print("| HOG box vs MTCNN 5 points | dx (eye-mouth d) | dy | side |")
    print("|---|---|---|---|")
    print("| median | " + " | ".join(f"{v:.3f}" for v in np.median(r5, 0)) + " |")
    print("| std | " + " | ".join(f"{v:.3f}" for v in r5.std(0)) + " |")
    print("| std / median side | " + " | ".join(f"{v:.3f}" for v in r5.std(0) / np.median(r5[:, 2])) + " |")
    print("| box: std / median side | " + " | ".join(f"{v:.3f}" for v in r.std(0) / np.median(r[:, 2])) + " |")
    both = ~np.isnan(a[:, 3])
    print("| faces | n | NME med % MTCNN box | mapped box | HOG box |")
    print("|---|---|---|---|---|")
    print(f"| both | {both.sum()} | {np.median(a[both, 0]) * 100:.2f} | {np.median(a[both, 1]) * 100:.2f} | "
          f"{np.median(a[both, 3]) * 100:.2f} |")
    if (~both).any():
        print(f"| MTCNN only | {(~both).sum()} | {np.median(a[~both, 0]) * 100:.2f} | "
              f"{np.median(a[~both, 1]) * 100:.2f} | - |")
    acc = a[:, 2] <= AGREEMENT
    print(f"# agreement (mean 5-point distance / MTCNN eye distance) of the mapped-box 68 points: "
          f"median {np.median(a[:, 2]):.3f}, p90 {np.percentile(a[:, 2], 90):.3f}; kept (<= {AGREEMENT}) "
          f"{acc.sum()}/{len(a)}, NME med kept {np.median(a[acc, 1]) * 100 if acc.any() else float('nan'):.2f}% "
          f"rejected {np.median(a[~acc, 1]) * 100 if (~acc).any() else float('nan'):.2f}%")
    print("| 5-point error med % (/ eye-corner dist.) | n | MTCNN 5 points | dlib 68 -> 5 (mapped box) |")
    print("|---|---|---|---|")
    for name, m in (("kept", acc), ("rejected", ~acc), ("all", np.ones_like(acc))):
        if m.any():
            print(f"| {name} | {m.sum()} | {np.median(a[m, 4]) * 100:.2f} | {np.median(a[m, 5]) * 100:.2f} |")


if __name__ == "__main__":
    main()
