"""Build Deng et al. 2019's ``BFM_model_front.mat`` from the raw Basel Face Model 2009 files.

This is Deng et al.'s ``transferBFM09`` (Deep3DFaceRecon, ``util/load_mats.py``), with the
vertex counts read from the files instead of hard-coded and every input checked:

Inputs (the BFM and the expression basis are not redistributable; get them from their owners):

- ``01_MorphableModel.mat`` (BFM 2009): ``shapeMU (3Nb, 1)`` micrometres, ``shapePC (3Nb, Ks)``,
  ``shapeEV (Ks, 1)``, ``texMU (3Nb, 1)`` 0-255, ``texPC (3Nb, Kt)``, ``texEV (Kt, 1)``
  (``Nb = 53490``, ``Ks = Kt = 199``; ``tl`` and the segment data are not used).
- ``Exp_Pca.bin`` (Guo et al. 2018): little-endian ``int32 exp_dim``, ``float32 expMU (3Ne)``
  (read but unused, as in Deng et al.), ``float32 expPC`` stored row-major as
  ``(exp_dim, 3Ne)`` (``Ne = 53215``, ``exp_dim = 79``).
- in the auxiliary folder (``--aux``, Deng et al.'s ``BFM/`` folder): ``std_exp.txt``
  (``exp_dim`` whitespace-separated standard deviations), ``BFM_front_idx.mat`` (``idx``:
  1-based ids into the ``Ne`` expression vertices), ``BFM_exp_idx.mat`` (``trimIndex``: 1-based
  ids into the ``Nb`` BFM vertices giving the ``Ne`` expression vertices) and
  ``facemodel_info.mat`` (``frontmask2_idx``, ``skinmask``, ``keypoints``, ``point_buf``, ``tri``,
  ``tri_mask2``, copied unchanged).

Formulas (``N = len(idx)`` output vertices, ``35709`` for BFM; per-column scaling)::

    idBase  = (shapePC * shapeEV.T / 1e5)[:, :n_id]       # decimetres per unit coefficient
    exBase  = (expPC   * expEV.T   / 1e5)[:, :n_exp]      # expEV from std_exp.txt (float64)
    texBase = (texPC   * texEV.T)[:, :n_tex]              # 0-255 per unit coefficient
    index_exp   = idx - 1                                 # into the Ne expression vertices
    index_shape = (trimIndex - 1)[index_exp]              # into the Nb BFM vertices
    B[...]      = B.reshape(-1, 3, K)[index, :, :].reshape(-1, K)   (index_shape; exp: index_exp)
    meanshape   = (shapeMU.reshape(-1, 3) / 1e5)[index_shape].reshape(1, -1)
    meantex     = texMU.reshape(-1, 3)[index_shape].reshape(1, -1)

The result is written with :func:`scipy.io.savemat` (MATLAB v5, uncompressed, like Deng et al.)
and can be loaded with :func:`face3dkit.model.load_model`. Command line::

    python -m face3dkit.model.bfm 01_MorphableModel.mat Exp_Pca.bin --aux BFM/ \\
        -o BFM/BFM_model_front.mat
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from face3dkit.model._common import ModelFileError, _atomic_write, _fail, _one_line
from face3dkit.model.mat_format import read_mat

__all__ = ["convert_bfm2009", "bfm2009_to_front", "read_exp_pca", "AUX_FILES"]

#: Files :func:`convert_bfm2009` needs in ``aux_dir``.
AUX_FILES = ("std_exp.txt", "BFM_front_idx.mat", "BFM_exp_idx.mat", "facemodel_info.mat")
BFM_KEYS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV")
INFO_KEYS = ("frontmask2_idx", "skinmask", "keypoints", "point_buf", "tri", "tri_mask2")


def read_exp_pca(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read Guo et al.'s ``Exp_Pca.bin``; the vertex count is inferred from the file size.

    Returns:
        ``expMU (3Ne,)`` float32 and ``expPC (3Ne, exp_dim)`` float32 (transposed from the
        stored row-major ``(exp_dim, 3Ne)``), model units of the BFM (micrometres).

    Raises:
        ModelFileError: missing file or a size that does not fit the layout.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except OSError as e:
        raise _fail(path, f"cannot read ({e.strerror or e})") from None
    if len(raw) < 4:
        raise _fail(path, f"truncated Exp_Pca.bin ({len(raw)} bytes)")
    exp_dim = int(np.frombuffer(raw, "<i4", count=1)[0])
    n_float, rest = divmod(len(raw) - 4, 4)
    if exp_dim <= 0 or exp_dim > 10000:
        raise _fail(path, f"not an Exp_Pca.bin (exp_dim = {exp_dim})")
    if rest or n_float % (3 * (1 + exp_dim)) or n_float == 0:
        raise _fail(path, f"truncated or not an Exp_Pca.bin ({len(raw)} bytes do not fit int32 "
                          f"exp_dim={exp_dim} + float32 expMU (3Ne) + expPC ({exp_dim}, 3Ne))")
    n3 = n_float // (1 + exp_dim)
    data = np.frombuffer(raw, "<f4", offset=4).astype(np.float32)
    exp_mu = data[:n3].copy()
    exp_pc = data[n3:].reshape(exp_dim, n3).T.copy()
    return exp_mu, exp_pc


def _ids(path: Path, key: str, a: np.ndarray, hi: int, what: str) -> np.ndarray:
    """1-based ids (any numeric dtype) in [1, hi] -> 0-based int64 (flattened)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iuf" or (a.size and not np.array_equal(a, np.round(a))):
        raise _fail(path, f"{key} must hold integer 1-based ids")
    a = a.reshape(-1).astype(np.int64)
    if a.size == 0:
        raise _fail(path, f"{key} is empty")
    if int(a.min()) < 1 or int(a.max()) > hi:
        raise _fail(path, f"{key} out of range (1-based ids into {what} must be in [1, {hi}]; "
                          f"found {int(a.min())}..{int(a.max())})")
    return a - 1


def _check_max(path: Path, key: str, a: np.ndarray, hi: int, what: str) -> None:
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise _fail(path, f"{key} is not a numeric array")
    if a.size and (float(a.min()) < 0 or float(a.max()) > hi):
        raise _fail(path, f"{key} out of range ({what} must be in [1, {hi}]; found "
                          f"{a.min():g}..{a.max():g})")


def bfm2009_to_front(morphable_model_mat: str | os.PathLike, exp_pca_bin: str | os.PathLike,
                     aux_dir: str | os.PathLike, n_id: int = 80, n_exp: int = 64,
                     n_tex: int = 80) -> dict[str, np.ndarray]:
    """Deng et al.'s ``transferBFM09`` in memory (formulas in the module docstring).

    Args:
        morphable_model_mat: BFM 2009 ``01_MorphableModel.mat``.
        exp_pca_bin: Guo et al.'s ``Exp_Pca.bin``.
        aux_dir: folder with :data:`AUX_FILES`.
        n_id, n_exp, n_tex: components kept (Deng et al.: 80, 64, 80).

    Returns:
        The arrays of ``BFM_model_front.mat``: ``meanshape (1, 3N)``, ``meantex (1, 3N)``,
        ``idBase (3N, n_id)``, ``exBase (3N, n_exp)``, ``texBase (3N, n_tex)`` and the
        ``facemodel_info.mat`` arrays, dtypes as numpy gives them for Deng's code (float32
        from BFM's single-precision arrays; ``exBase`` float64 since ``std_exp.txt`` is read
        as float64).

    Raises:
        ModelFileError: a missing or inconsistent input, one line naming the file.
    """
    bfm_path, bin_path, aux = Path(morphable_model_mat), Path(exp_pca_bin), Path(aux_dir)
    aux_paths = {name: aux / name for name in AUX_FILES}
    missing = [p for p in aux_paths.values() if not p.is_file()]
    if missing:
        also = f" (also missing: {', '.join(p.name for p in missing[1:])})" if missing[1:] else ""
        raise _fail(missing[0], f"missing auxiliary file {missing[0].name}, needed to convert "
                                f"BFM 2009 (Deng et al.'s BFM folder: {', '.join(AUX_FILES)})"
                                f"{also}")
    for k in (n_id, n_exp, n_tex):
        if int(k) <= 0:
            raise ValueError(f"n_id, n_exp and n_tex must be positive, got {n_id}, {n_exp}, "
                             f"{n_tex}")

    # --- BFM 2009
    bfm = read_mat(bfm_path, BFM_KEYS, "not the BFM 2009 01_MorphableModel.mat?")
    shape_mu, shape_pc, shape_ev = bfm["shapeMU"], bfm["shapePC"], bfm["shapeEV"]
    tex_mu, tex_pc, tex_ev = bfm["texMU"], bfm["texPC"], bfm["texEV"]
    if shape_mu.size == 0 or shape_mu.size % 3:
        raise _fail(bfm_path, f"shapeMU has shape {shape_mu.shape}, expected (3Nb, 1)")
    nb = shape_mu.size // 3
    for key, a in (("shapePC", shape_pc), ("texPC", tex_pc)):
        if a.ndim != 2 or a.shape[0] != 3 * nb:
            raise _fail(bfm_path, f"{key} has shape {a.shape} but shapeMU has {nb} vertices "
                                  f"(expected ({3 * nb}, K))")
    if tex_mu.size != 3 * nb:
        raise _fail(bfm_path, f"texMU has shape {tex_mu.shape} but shapeMU has {nb} vertices")
    for key, ev, pc_key, pc, n in (("shapeEV", shape_ev, "shapePC", shape_pc, n_id),
                                   ("texEV", tex_ev, "texPC", tex_pc, n_tex)):
        if ev.size != pc.shape[1]:
            raise _fail(bfm_path, f"{key} has {ev.size} values but {pc_key} has {pc.shape[1]} "
                                  f"components")
        if n > pc.shape[1]:
            raise _fail(bfm_path, f"{pc_key} has {pc.shape[1]} components, {n} requested")

    # --- expression basis
    _, exp_pc = read_exp_pca(bin_path)
    exp_dim = exp_pc.shape[1]
    if n_exp > exp_dim:
        raise _fail(bin_path, f"has {exp_dim} expression components, {n_exp} requested")
    std_path = aux_paths["std_exp.txt"]
    try:
        exp_ev = np.loadtxt(std_path)
    except Exception as e:  # ValueError on non-numbers
        raise _fail(std_path, f"not a list of numbers ({_one_line(e, 100)})") from None
    if exp_ev.size != exp_dim:
        raise _fail(std_path, f"has {exp_ev.size} values but {bin_path.name} has {exp_dim} "
                              f"expression components")

    # --- vertex selection
    idx_path, trim_path = aux_paths["BFM_front_idx.mat"], aux_paths["BFM_exp_idx.mat"]
    trim = read_mat(trim_path, ("trimIndex",), "not Deng et al.'s BFM_exp_idx.mat?")["trimIndex"]
    ne = exp_pc.shape[0] // 3
    if trim.size != ne:
        raise _fail(trim_path, f"trimIndex has {trim.size} entries but {bin_path.name} has "
                               f"{ne} vertices")
    trim0 = _ids(trim_path, "trimIndex", trim, nb, f"the {nb} vertices of {bfm_path.name}")
    idx = read_mat(idx_path, ("idx",), "not Deng et al.'s BFM_front_idx.mat?")["idx"]
    index_exp = _ids(idx_path, "idx", idx, ne, f"the {ne} expression vertices")
    index_shape = trim0[index_exp]
    n = index_exp.size

    # --- other info, copied unchanged (checked against the N output vertices)
    info_path = aux_paths["facemodel_info.mat"]
    info = read_mat(info_path, INFO_KEYS, "not Deng et al.'s facemodel_info.mat?")
    tri, point_buf = np.asarray(info["tri"]), np.asarray(info["point_buf"])
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise _fail(info_path, f"tri has shape {tri.shape}, expected (F, 3)")
    if point_buf.ndim != 2 or point_buf.shape[0] != n:
        raise _fail(info_path, f"point_buf has shape {point_buf.shape} but {idx_path.name} "
                               f"selects {n} vertices")
    if np.asarray(info["skinmask"]).size != n:
        raise _fail(info_path, f"skinmask has {np.asarray(info['skinmask']).size} entries but "
                               f"{idx_path.name} selects {n} vertices")
    for key in ("tri", "keypoints", "frontmask2_idx", "tri_mask2"):
        _check_max(info_path, key, info[key], n, "1-based vertex ids")
    _check_max(info_path, "point_buf", point_buf, tri.shape[0] + 1, "1-based face ids")

    # --- transferBFM09
    id_base = shape_pc[:, :n_id] * np.reshape(shape_ev, [-1, shape_pc.shape[1]])[:, :n_id]
    id_base = id_base / 1e5
    ex_base = exp_pc[:, :n_exp] * np.reshape(exp_ev, [-1, exp_dim])[:, :n_exp]
    ex_base = ex_base / 1e5
    tex_base = tex_pc[:, :n_tex] * np.reshape(tex_ev, [-1, tex_pc.shape[1]])[:, :n_tex]

    id_base = np.reshape(np.reshape(id_base, [-1, 3, n_id])[index_shape], [-1, n_id])
    tex_base = np.reshape(np.reshape(tex_base, [-1, 3, n_tex])[index_shape], [-1, n_tex])
    ex_base = np.reshape(np.reshape(ex_base, [-1, 3, n_exp])[index_exp], [-1, n_exp])
    meanshape = np.reshape((np.reshape(shape_mu, [-1, 3]) / 1e5)[index_shape], [1, -1])
    meantex = np.reshape(np.reshape(tex_mu, [-1, 3])[index_shape], [1, -1])

    out = {"meanshape": meanshape, "meantex": meantex, "idBase": id_base, "exBase": ex_base,
           "texBase": tex_base}
    out.update({k: info[k] for k in ("tri", "point_buf", "tri_mask2", "keypoints",
                                     "frontmask2_idx", "skinmask")})
    return out


def convert_bfm2009(morphable_model_mat: str | os.PathLike, exp_pca_bin: str | os.PathLike,
                    aux_dir: str | os.PathLike, out_path: str | os.PathLike, n_id: int = 80,
                    n_exp: int = 64, n_tex: int = 80) -> Path:
    """Write Deng et al.'s ``BFM_model_front.mat`` from the raw BFM 2009 files, atomically.

    See :func:`bfm2009_to_front` for the arguments and the module docstring for the formulas.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ModelFileError: a missing or inconsistent input (one line naming the file).
    """
    from scipy.io import savemat

    arrays = bfm2009_to_front(morphable_model_mat, exp_pca_bin, aux_dir, n_id, n_exp, n_tex)
    return _atomic_write(Path(out_path).expanduser(), lambda f: savemat(f, arrays))


def main(argv: list[str] | None = None) -> int:
    """``python -m face3dkit.model.bfm``: command-line front end of :func:`convert_bfm2009`."""
    p = argparse.ArgumentParser(
        prog="python -m face3dkit.model.bfm",
        description="Convert BFM 2009 + Guo et al.'s expression basis to Deng et al.'s "
                    "BFM_model_front.mat (transferBFM09).")
    p.add_argument("morphable_model_mat", help="BFM 2009 01_MorphableModel.mat")
    p.add_argument("exp_pca_bin", help="Exp_Pca.bin (Guo et al. 2018)")
    p.add_argument("--aux", required=True, metavar="DIR",
                   help=f"folder with {', '.join(AUX_FILES)}")
    p.add_argument("-o", "--out", required=True, help="output BFM_model_front.mat")
    p.add_argument("--n-id", type=int, default=80)
    p.add_argument("--n-exp", type=int, default=64)
    p.add_argument("--n-tex", type=int, default=80)
    args = p.parse_args(argv)
    try:
        out = convert_bfm2009(args.morphable_model_mat, args.exp_pca_bin, args.aux, args.out,
                              args.n_id, args.n_exp, args.n_tex)
    except (ModelFileError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
