"""BFM 2009 -> Deng et al.'s BFM_model_front.mat (transferBFM09), on tiny synthetic files.

The expected output is re-derived here row by row from the raw arrays (vertex j of the output is
expression vertex idx[j] - 1, which is BFM vertex trimIndex[idx[j] - 1] - 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat, savemat

from face3dkit.model import ModelFileError, load_model
from face3dkit.model.bfm import AUX_FILES, convert_bfm2009, main, read_exp_pca

NB, NE, N = 40, 35, 30  # BFM vertices, expression vertices, output vertices
KS, KT, EXP_DIM = 12, 11, 9
ROWS, COLS = 5, 6


def grid_info(rng: np.random.Generator) -> dict:
    """facemodel_info.mat arrays for a 5 x 6 grid of the N output vertices (1-based doubles)."""
    tris = []
    for i in range(ROWS - 1):
        for j in range(COLS - 1):
            v00, v01 = i * COLS + j, i * COLS + j + 1
            v10, v11 = v00 + COLS, v01 + COLS
            tris += [(v00, v01, v11), (v00, v11, v10)]
    tri0 = np.array(tris)
    f = len(tri0)
    pb = np.full((N, 8), f + 1.0)
    fill = np.zeros(N, int)
    for fi, t in enumerate(tri0):
        for v in t:
            pb[v, fill[v]] = fi + 1
            fill[v] += 1
    front = np.sort(rng.choice(N, 22, replace=False))
    in_front = np.zeros(N, bool)
    in_front[front] = True
    return {
        "tri": tri0 + 1.0,
        "point_buf": pb,
        "tri_mask2": tri0[in_front[tri0].all(1)] + 1.0,
        "keypoints": rng.integers(1, N + 1, (1, 68)).astype(np.float64),
        "frontmask2_idx": front[:, None] + 1.0,
        "skinmask": (rng.uniform(size=(1, N)) > 0.4).astype(np.float64),
    }


def write_inputs(root: Path, seed: int = 0) -> dict:
    """Write the raw files in their layouts; return the raw arrays."""
    rng = np.random.default_rng(seed)
    aux = root / "aux"
    aux.mkdir()
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(5), indexing="ij"), -1).reshape(-1, 2)
    shape_mu = np.concatenate([grid * 2e4, rng.uniform(0, 1e4, (NB, 1))], 1)  # micrometres
    raw = {
        "shapeMU": shape_mu.reshape(-1, 1).astype(np.float32),
        "shapePC": rng.standard_normal((3 * NB, KS)).astype(np.float32) * 0.01,
        "shapeEV": rng.uniform(1e3, 1e5, (KS, 1)).astype(np.float32),
        "texMU": rng.uniform(50, 200, (3 * NB, 1)).astype(np.float32),
        "texPC": rng.standard_normal((3 * NB, KT)).astype(np.float32) * 0.01,
        "texEV": rng.uniform(100, 3000, (KT, 1)).astype(np.float32),
        "tl": rng.integers(1, NB + 1, (50, 3)).astype(np.float64),  # present but unused
    }
    savemat(root / "01_MorphableModel.mat", raw)
    raw["expMU"] = rng.standard_normal(3 * NE).astype(np.float32)
    raw["expPC_rows"] = (rng.standard_normal((EXP_DIM, 3 * NE)) * 0.01).astype(np.float32)
    with open(root / "Exp_Pca.bin", "wb") as f:
        f.write(np.array([EXP_DIM], "<i4").tobytes())
        f.write(raw["expMU"].astype("<f4").tobytes())
        f.write(raw["expPC_rows"].astype("<f4").tobytes())  # row-major (exp_dim, 3Ne)
    raw["std_exp"] = rng.uniform(1e3, 5e4, EXP_DIM)
    (aux / "std_exp.txt").write_text(" ".join(f"{x:.9g}" for x in raw["std_exp"]) + "\n")
    raw["std_exp"] = np.loadtxt(aux / "std_exp.txt")
    raw["trimIndex"] = (rng.choice(NB, NE, replace=False) + 1.0)[:, None]
    raw["idx"] = (rng.choice(NE, N, replace=False) + 1.0)[:, None]
    savemat(aux / "BFM_exp_idx.mat", {"trimIndex": raw["trimIndex"]})
    savemat(aux / "BFM_front_idx.mat", {"idx": raw["idx"]})
    raw["info"] = grid_info(rng)
    savemat(aux / "facemodel_info.mat", raw["info"])
    return raw


def expected_front(raw: dict, n_id: int, n_exp: int, n_tex: int) -> dict:
    """transferBFM09 written out per output row (3j + c) and component k."""
    out = {k: np.zeros((3 * N, m)) for k, m in (("idBase", n_id), ("exBase", n_exp),
                                                 ("texBase", n_tex))}
    out["meanshape"], out["meantex"] = np.zeros(3 * N), np.zeros(3 * N)
    exp_pc = raw["expPC_rows"].T  # (3Ne, exp_dim)
    for j in range(N):
        ve = int(raw["idx"][j, 0]) - 1
        vb = int(raw["trimIndex"][ve, 0]) - 1
        for c in range(3):
            r, rb, re = 3 * j + c, 3 * vb + c, 3 * ve + c
            out["meanshape"][r] = raw["shapeMU"][rb, 0] / 1e5
            out["meantex"][r] = raw["texMU"][rb, 0]
            for k in range(n_id):
                out["idBase"][r, k] = raw["shapePC"][rb, k] * raw["shapeEV"][k, 0] / 1e5
            for k in range(n_exp):
                out["exBase"][r, k] = exp_pc[re, k] * raw["std_exp"][k] / 1e5
            for k in range(n_tex):
                out["texBase"][r, k] = raw["texPC"][rb, k] * raw["texEV"][k, 0]
    return out


def convert(tmp_path: Path, **kw) -> Path:
    return convert_bfm2009(tmp_path / "01_MorphableModel.mat", tmp_path / "Exp_Pca.bin",
                           tmp_path / "aux", tmp_path / "BFM_model_front.mat", **kw)


def assert_one_line(exc: pytest.ExceptionInfo, start: object) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(start)), msg
    return msg


def test_read_exp_pca(tmp_path):
    raw = write_inputs(tmp_path)
    mu, pc = read_exp_pca(tmp_path / "Exp_Pca.bin")
    np.testing.assert_array_equal(mu, raw["expMU"])
    np.testing.assert_array_equal(pc, raw["expPC_rows"].T)
    assert pc.shape == (3 * NE, EXP_DIM) and pc.dtype == np.float32


def test_convert_matches_transferBFM09(tmp_path):
    raw = write_inputs(tmp_path)
    out = convert(tmp_path, n_id=5, n_exp=4, n_tex=6)
    assert out == tmp_path / "BFM_model_front.mat"
    got = loadmat(out)
    assert {k for k in got if not k.startswith("__")} == {
        "meanshape", "meantex", "idBase", "exBase", "texBase", "tri", "point_buf", "tri_mask2",
        "keypoints", "frontmask2_idx", "skinmask"}
    exp = expected_front(raw, 5, 4, 6)
    assert got["meanshape"].shape == (1, 3 * N) and got["meantex"].shape == (1, 3 * N)
    assert got["idBase"].shape == (3 * N, 5) and got["exBase"].shape == (3 * N, 4)
    assert got["texBase"].shape == (3 * N, 6)
    for key in ("meanshape", "meantex", "idBase", "exBase", "texBase"):
        np.testing.assert_allclose(got[key].reshape(exp[key].shape), exp[key], rtol=1e-6,
                                   atol=0, err_msg=key)
    # dtypes as numpy gives them in Deng's code: float32 BFM arrays, float64 std_exp.txt
    assert got["idBase"].dtype == np.float32 and got["exBase"].dtype == np.float64
    for key, val in raw["info"].items():
        np.testing.assert_array_equal(got[key], val, err_msg=key)


def test_converted_file_loads(tmp_path):
    raw = write_inputs(tmp_path)
    model = load_model(convert(tmp_path, n_id=5, n_exp=4, n_tex=6))
    assert (model.n_verts, model.n_id, model.n_exp, model.n_tex) == (N, 5, 4, 6)
    exp = expected_front(raw, 5, 4, 6)
    rng = np.random.default_rng(1)
    a, b, d = rng.standard_normal(5), rng.standard_normal(4), rng.standard_normal(6)
    mean = exp["meanshape"].reshape(-1, 3)
    shape = mean - mean.mean(0) + (exp["idBase"] @ a + exp["exBase"] @ b).reshape(-1, 3)
    t = lambda x: torch.tensor(x[None], dtype=torch.float32)  # noqa: E731
    np.testing.assert_allclose(model.shape(t(a), t(b))[0].numpy(), shape, rtol=1e-5, atol=1e-5)
    albedo = ((exp["meantex"] + exp["texBase"] @ d) / 255).reshape(-1, 3)
    np.testing.assert_allclose(model.albedo(t(d))[0].numpy(), albedo, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.faces.numpy(), raw["info"]["tri"] - 1)


def test_default_component_counts_need_enough_components(tmp_path):
    write_inputs(tmp_path)
    with pytest.raises(ModelFileError) as e:
        convert(tmp_path)  # n_id=80 > 12 components in the synthetic file
    msg = assert_one_line(e, tmp_path / "01_MorphableModel.mat")
    assert "shapePC has 12 components, 80 requested" in msg
    assert not (tmp_path / "BFM_model_front.mat").exists()


@pytest.mark.parametrize("name", AUX_FILES)
def test_missing_aux_file(tmp_path, name):
    write_inputs(tmp_path)
    (tmp_path / "aux" / name).unlink()
    with pytest.raises(ModelFileError) as e:
        convert(tmp_path, n_id=5, n_exp=4, n_tex=6)
    assert name in assert_one_line(e, tmp_path / "aux" / name)


def _break(tmp_path: Path, what: str) -> Path:
    """Damage one input; return the file the error must name."""
    aux = tmp_path / "aux"
    if what == "trim_range":
        savemat(aux / "BFM_exp_idx.mat", {"trimIndex": np.arange(1.0, NE + 1)[:, None] + NB})
        return aux / "BFM_exp_idx.mat"
    if what == "trim_count":
        savemat(aux / "BFM_exp_idx.mat", {"trimIndex": np.arange(1.0, NE)[:, None]})
        return aux / "BFM_exp_idx.mat"
    if what == "idx_range":
        savemat(aux / "BFM_front_idx.mat", {"idx": np.array([[1.0], [NE + 1.0]])})
        return aux / "BFM_front_idx.mat"
    if what == "exp_bin_size":
        p = tmp_path / "Exp_Pca.bin"
        p.write_bytes(p.read_bytes()[:-7])
        return p
    if what == "std_count":
        (aux / "std_exp.txt").write_text("1 2 3\n")
        return aux / "std_exp.txt"
    if what == "std_text":
        (aux / "std_exp.txt").write_text("one two\n")
        return aux / "std_exp.txt"
    if what == "point_buf_rows":
        info = loadmat(aux / "facemodel_info.mat")
        info["point_buf"] = info["point_buf"][:-1]
        savemat(aux / "facemodel_info.mat", {k: v for k, v in info.items() if k[0] != "_"})
        return aux / "facemodel_info.mat"
    if what == "bfm_keys":
        savemat(tmp_path / "01_MorphableModel.mat", {"shapeMU": np.zeros((6, 1))})
        return tmp_path / "01_MorphableModel.mat"
    if what == "bfm_shape":
        raw = loadmat(tmp_path / "01_MorphableModel.mat")
        raw["texPC"] = raw["texPC"][:-3]
        savemat(tmp_path / "01_MorphableModel.mat", {k: v for k, v in raw.items() if k[0] != "_"})
        return tmp_path / "01_MorphableModel.mat"
    if what == "not_mat":
        (aux / "BFM_front_idx.mat").write_text("hello")
        return aux / "BFM_front_idx.mat"
    raise AssertionError(what)


@pytest.mark.parametrize("what, expect", [
    ("trim_range", "trimIndex out of range"),
    ("trim_count", "trimIndex has 34 entries but Exp_Pca.bin has 35 vertices"),
    ("idx_range", "idx out of range"),
    ("exp_bin_size", "truncated or not an Exp_Pca.bin"),
    ("std_count", "has 3 values but Exp_Pca.bin has 9 expression components"),
    ("std_text", "not a list of numbers"),
    ("point_buf_rows", "point_buf has shape (29, 8)"),
    ("bfm_keys", "missing keys shapePC, shapeEV, texMU, texPC, texEV"),
    ("bfm_shape", "texPC has shape (117, 11) but shapeMU has 40 vertices"),
    ("not_mat", "not a MATLAB"),
])
def test_inconsistent_inputs(tmp_path, what, expect):
    write_inputs(tmp_path)
    bad = _break(tmp_path, what)
    with pytest.raises(ModelFileError) as e:
        convert(tmp_path, n_id=5, n_exp=4, n_tex=6)
    assert expect in assert_one_line(e, bad)
    assert not (tmp_path / "BFM_model_front.mat").exists()


def test_command_line(tmp_path, capsys):
    write_inputs(tmp_path)
    out = tmp_path / "front.mat"
    args = [str(tmp_path / "01_MorphableModel.mat"), str(tmp_path / "Exp_Pca.bin"),
            "--aux", str(tmp_path / "aux"), "-o", str(out), "--n-id", "5", "--n-exp", "4",
            "--n-tex", "6"]
    assert main(args) == 0 and out.is_file()
    assert load_model(out).n_exp == 4
    (tmp_path / "aux" / "std_exp.txt").unlink()
    assert main(args) == 1
    assert "std_exp.txt" in capsys.readouterr().err
