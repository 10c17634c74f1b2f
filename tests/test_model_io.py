"""Model files: face3dkit .npz, Deng et al.'s BFM_model_front.mat, the default model, errors.

Synthetic files are written here with numpy/scipy in the documented layouts; the loaded model is
compared with numpy re-derivations from the raw arrays.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

import face3dkit.model.files as model_io
from face3dkit.model import (
    FORMAT_NAME,
    ModelFileError,
    MorphableModel,
    default_model_path,
    detect_format,
    load_model,
    save_model,
)

ROWS, COLS = 5, 6  # 30-vertex grid


def grid_mesh() -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) bumpy grid, x right / y up / z out, and (F, 3) 0-based CCW (from +z) triangles."""
    r, c = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
    x, y = c.ravel() * 0.2, r.ravel() * 0.2
    z = 0.3 * np.exp(-((x - 0.5) ** 2 + (y - 0.4) ** 2))
    verts = np.stack([x, y, z], 1)
    tris = []
    for i in range(ROWS - 1):
        for j in range(COLS - 1):
            v00, v01 = i * COLS + j, i * COLS + j + 1
            v10, v11 = v00 + COLS, v01 + COLS
            tris += [(v00, v01, v11), (v00, v11, v10)]
    return verts, np.array(tris)


def point_buf_1based(tri0: np.ndarray, n: int, width: int = 8) -> np.ndarray:
    """Deng's point_buf: 1-based adjacent faces per vertex, padded with F+1."""
    f = len(tri0)
    out = np.full((n, width), f + 1, dtype=np.float64)
    fill = np.zeros(n, int)
    for fi, t in enumerate(tri0):
        for v in t:
            out[v, fill[v]] = fi + 1
            fill[v] += 1
    return out


def deng_arrays(seed: int = 0, k_id: int = 7, k_exp: int = 5, k_tex: int = 6) -> dict:
    """A tiny BFM_model_front.mat: 30 vertices, bases (3N, K), 1-based indices as doubles."""
    rng = np.random.default_rng(seed)
    verts, tri0 = grid_mesh()
    n = len(verts)
    mean = verts + np.array([0.3, -0.2, 1.5])  # not centred: Deng re-centres on load
    front = np.sort(rng.choice(n, 20, replace=False))
    in_front = np.zeros(n, bool)
    in_front[front] = True
    tri_mask = tri0[in_front[tri0].all(1)]
    return {
        "meanshape": mean.reshape(1, -1).astype(np.float32),
        "idBase": (0.05 * rng.standard_normal((3 * n, k_id))).astype(np.float32),
        "exBase": 0.05 * rng.standard_normal((3 * n, k_exp)),  # float64, as in Deng's file
        "meantex": rng.uniform(60, 200, (1, 3 * n)).astype(np.float32),
        "texBase": (5.0 * rng.standard_normal((3 * n, k_tex))).astype(np.float32),
        "tri": (tri0 + 1).astype(np.float64),
        "point_buf": point_buf_1based(tri0, n),
        "keypoints": (rng.integers(0, n, 68) + 1).astype(np.float64)[None],
        "frontmask2_idx": (front + 1).astype(np.float64)[:, None],
        "tri_mask2": (tri_mask + 1).astype(np.float64),
        "skinmask": (rng.uniform(size=(1, n)) > 0.3).astype(np.float64),
    }


def write_deng(path: Path, **changes) -> dict:
    arrays = deng_arrays()
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    savemat(path, arrays)
    return arrays


def random_model(seed: int = 1, uv: bool = True, names: bool = True) -> MorphableModel:
    rng = np.random.default_rng(seed)
    verts, tri0 = grid_mesh()
    n = len(verts)
    kw = {}
    if uv:
        kw.update(uv=rng.uniform(size=(n, 2)), face_uv=tri0.copy())
    if names:
        kw.update(exp_names=[f"unit-{i}" for i in range(4)], id_names=[f"pc{i}" for i in range(3)])
    return MorphableModel(
        verts, rng.standard_normal((n, 3, 3)), rng.standard_normal((n, 3, 4)),
        rng.uniform(size=(n, 3)), 0.1 * rng.standard_normal((n, 3, 2)), tri0,
        rng.integers(0, n, 68), skin_mask=rng.uniform(size=n) > 0.5,
        front_mask=rng.uniform(size=n) > 0.2,
        meta={"name": "synthetic", "licence": "CC0", "units": "dm", "albedo_range": [0, 1]},
        **kw,
    )


def assert_one_line(exc: pytest.ExceptionInfo, start: object) -> str:
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert "\n" not in msg
    assert msg.startswith(str(start)), msg
    return msg


def rewrite_npz(src: Path, dst: Path, **changes) -> None:
    with np.load(src, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    d.update(changes)
    np.savez(dst, **{k: v for k, v in d.items() if v is not None})


# ---------------------------------------------------------------------------------------------
# Deng et al.'s BFM_model_front.mat


def test_deng_shape_and_albedo_match_numpy(tmp_path):
    path = tmp_path / "BFM_model_front.mat"
    raw = write_deng(path)
    model = load_model(path)
    n = raw["meanshape"].size // 3
    assert (model.n_verts, model.n_id, model.n_exp, model.n_tex) == (n, 7, 5, 6)

    rng = np.random.default_rng(5)
    a, b, d = rng.standard_normal((2, 7)), rng.standard_normal((2, 5)), rng.standard_normal((2, 6))
    mean = raw["meanshape"].astype(np.float64).reshape(-1, 3)
    mean = mean - mean.mean(0)  # Deng's recenter
    expect = np.stack([
        mean + (raw["idBase"] @ a[i] + raw["exBase"] @ b[i]).reshape(-1, 3) for i in range(2)
    ])
    got = model.shape(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), expect, atol=2e-6)
    np.testing.assert_allclose(model.mean_shape.numpy(), mean, atol=1e-6)

    alb = np.stack([((raw["meantex"].ravel() + raw["texBase"] @ d[i]) / 255.0).reshape(-1, 3)
                    for i in range(2)])
    got = model.albedo(torch.tensor(d, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), alb, atol=2e-6)
    assert 0 <= model.mean_albedo.min() and model.mean_albedo.max() <= 1


def test_deng_vertex_normals_from_point_buf(tmp_path):
    path = tmp_path / "BFM_model_front.mat"
    raw = write_deng(path)
    model = load_model(path)
    rng = np.random.default_rng(3)
    a = 0.5 * rng.standard_normal(7)
    verts = model.shape(torch.tensor(a[None], dtype=torch.float32))

    # Deng et al.: unit face normals, a zero normal appended at index F, summed over point_buf - 1
    v = verts[0].double().numpy()
    t = raw["tri"].astype(int) - 1
    fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    fn = np.vstack([fn, np.zeros((1, 3))])
    vn = fn[raw["point_buf"].astype(int) - 1].sum(1)
    vn /= np.linalg.norm(vn, axis=1, keepdims=True)

    got = model.vertex_normals(verts)[0].numpy()
    np.testing.assert_allclose(got, vn, atol=1e-5)
    assert (got[:, 2] > 0).all()  # CCW triangles of a +z-facing grid give +z normals
    vf = model.vertex_faces.numpy()
    assert vf.shape == raw["point_buf"].shape and vf.min() == -1 and vf.max() == len(t) - 1


def test_deng_indices_masks_and_meta(tmp_path):
    path = tmp_path / "front.mat"
    raw = write_deng(path)
    model = load_model(path)
    np.testing.assert_array_equal(model.faces.numpy(), raw["tri"] - 1)
    np.testing.assert_array_equal(model.landmark_idx.numpy(), raw["keypoints"].ravel() - 1)
    front = np.zeros(model.n_verts, bool)
    front[raw["frontmask2_idx"].ravel().astype(int) - 1] = True
    np.testing.assert_array_equal(model.front_mask.numpy(), front)
    np.testing.assert_array_equal(model.front_faces.numpy(), raw["tri_mask2"] - 1)
    np.testing.assert_array_equal(model.skin_mask.numpy(), raw["skinmask"].ravel() == 1)
    assert model.faces.dtype == torch.int64 and model.skin_mask.dtype == torch.bool
    assert model.meta["name"] == "BFM (Deng et al. 2019 front layout)"
    assert model.meta["source"] == str(path)
    assert model.layout.total == 7 + 5 + 6 + 33


def test_deng_optional_keys_default(tmp_path):
    path = tmp_path / "minimal.mat"
    write_deng(path, point_buf=None, frontmask2_idx=None, tri_mask2=None, skinmask=None)
    model = load_model(path)
    assert model.front_mask.all() and model.skin_mask.all()
    assert model.front_faces.shape == model.faces.shape


def test_device_and_dtype(tmp_path):
    path = tmp_path / "BFM_model_front.mat"
    write_deng(path)
    model = load_model(path, device="cpu", dtype=torch.float64)
    assert model.mean_shape.dtype == torch.float64 and model.id_basis.dtype == torch.float64
    assert model.faces.dtype == torch.int64 and model.front_mask.dtype == torch.bool
    with pytest.raises(ValueError, match="floating"):
        load_model(path, dtype=torch.int32)


# ---------------------------------------------------------------------------------------------
# face3dkit .npz


def _buffers(model: MorphableModel) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.named_buffers()}


def assert_same_model(a: MorphableModel, b: MorphableModel) -> None:
    ba, bb = _buffers(a), _buffers(b)
    assert ba.keys() == bb.keys()
    for k in ba:
        assert ba[k].dtype == bb[k].dtype, k
        assert torch.equal(ba[k], bb[k]), k
    assert (a.id_names, a.exp_names, a.tex_names) == (b.id_names, b.exp_names, b.tex_names)
    strip = lambda m: {k: v for k, v in m.items() if k != "source"}  # noqa: E731
    assert strip(a.meta) == strip(b.meta)


def test_npz_round_trip_exact(tmp_path):
    model = random_model()
    path = save_model(model, tmp_path / "m.npz")
    assert path == tmp_path / "m.npz"
    loaded = load_model(path)
    assert_same_model(model, loaded)
    assert loaded.has_uv and loaded.exp_names == [f"unit-{i}" for i in range(4)]
    assert loaded.meta["source"] == str(path)
    # the stored arrays follow the documented dtypes
    with np.load(path, allow_pickle=False) as z:
        assert str(z["format"]) == FORMAT_NAME and int(z["format_version"]) == 1
        assert z["mean_shape"].dtype == np.float32 and z["faces"].dtype == np.int32
        assert z["skin_mask"].dtype == np.bool_ and z["vertex_faces"].min() == -1
        assert json.loads(str(z["meta"]))["name"] == "synthetic"
        assert "tex_names" not in z.files
    # saving again gives the same model again (source updated)
    again = load_model(save_model(loaded, tmp_path / "m2.npz"))
    assert_same_model(model, again)


def test_npz_round_trip_without_optionals_and_from_deng(tmp_path):
    model = random_model(uv=False, names=False)
    assert_same_model(model, load_model(save_model(model, tmp_path / "plain.npz")))
    write_deng(tmp_path / "BFM_model_front.mat")
    bfm = load_model(tmp_path / "BFM_model_front.mat")
    back = load_model(save_model(bfm, tmp_path / "bfm.npz"))
    assert_same_model(bfm, back)
    assert back.meta["name"] == "BFM (Deng et al. 2019 front layout)"


def test_npz_mean_shape_used_as_stored(tmp_path):
    model = random_model()
    path = save_model(model, tmp_path / "m.npz")
    shifted = model.mean_shape.numpy() + np.array([1.0, 2.0, 3.0], np.float32)
    rewrite_npz(path, tmp_path / "shifted.npz", mean_shape=shifted)
    np.testing.assert_array_equal(load_model(tmp_path / "shifted.npz").mean_shape.numpy(), shifted)


def test_format_detected_by_content(tmp_path):
    save_model(random_model(), tmp_path / "model.bin")
    write_deng(tmp_path / "bfm.mat")
    os.replace(tmp_path / "bfm.mat", tmp_path / "bfm.data")
    assert detect_format(tmp_path / "model.bin") == "npz"
    assert detect_format(tmp_path / "bfm.data") == "mat"
    assert load_model(tmp_path / "model.bin").n_verts == ROWS * COLS
    assert load_model(str(tmp_path / "bfm.data")).n_id == 7


def test_save_is_atomic(tmp_path, monkeypatch):
    path = save_model(random_model(seed=1), tmp_path / "m.npz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(random_model(seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temp file left
    monkeypatch.undo()
    save_model(random_model(seed=2), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    assert_same_model(random_model(seed=2), load_model(path))


# ---------------------------------------------------------------------------------------------
# the default model


@pytest.fixture
def fake_default(tmp_path, monkeypatch):
    path = tmp_path / "default_model.npz"
    monkeypatch.setattr(model_io, "_default_model_resource", lambda name="default": path)
    monkeypatch.setattr(model_io, "_DEFAULT_CACHE", {})
    return path


def test_default_missing(fake_default):
    with pytest.raises(ModelFileError) as e:
        load_model("default")
    msg = assert_one_line(e, "default model file missing: ")
    assert str(fake_default) in msg and "build_default_model.py" in msg


def test_default_is_cached_and_copied(fake_default, monkeypatch):
    model = random_model()
    save_model(model, fake_default)
    calls = []
    real = model_io.read_model_file
    monkeypatch.setattr(model_io, "read_model_file", lambda p: calls.append(p) or real(p))
    a = load_model("default")
    b = load_model("default", dtype=torch.float64)
    assert len(calls) == 1
    assert_same_model(model, a)
    a.mean_shape.add_(1.0)  # must not leak into the cache
    assert_same_model(model, load_model("default"))
    assert b.mean_shape.dtype == torch.float64
    # a rebuilt file is read again
    save_model(random_model(seed=9), fake_default)
    st = os.stat(fake_default)
    os.utime(fake_default, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert_same_model(random_model(seed=9), load_model("default"))
    assert len(calls) == 2


@pytest.mark.skipif(not default_model_path().is_file(), reason="default model not built")
def test_shipped_default_model():
    model = load_model("default")
    assert model.landmark_idx.shape == (68,)
    assert model.meta.get("name") and model.meta["source"] == str(default_model_path())
    assert int(model.faces.max()) < model.n_verts
    assert model.layout.total == model.n_id + model.n_exp + model.n_tex + 33


# ---------------------------------------------------------------------------------------------
# errors: one line, starting with the path


def test_error_text_file_renamed_mat(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("these are not the arrays you are looking for\n" * 10)
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    assert "not a MATLAB" in assert_one_line(e, path)


def test_error_truncated_npz(tmp_path):
    path = save_model(random_model(), tmp_path / "m.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    assert "truncated or not a zip archive" in assert_one_line(e, path)


def test_error_truncated_mat(tmp_path):
    path = tmp_path / "BFM_model_front.mat"
    write_deng(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    assert_one_line(e, path)


def test_error_mat_missing_keys(tmp_path):
    path = tmp_path / "foo.mat"
    savemat(path, {"meanshape": np.zeros((1, 9)), "tri": np.ones((1, 3)), "other": 1.0})
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    msg = assert_one_line(e, path)
    assert msg == (f"{path}: missing keys idBase, exBase, meantex, texBase, keypoints "
                   f"(not a BFM_model_front.mat?)")


def test_error_raw_bfm2009_hint(tmp_path):
    path = tmp_path / "01_MorphableModel.mat"
    savemat(path, {"shapeMU": np.zeros((9, 1)), "shapePC": np.zeros((9, 2))})
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    assert "convert_bfm2009" in assert_one_line(e, path)


@pytest.mark.parametrize("change, expect", [
    ({"idBase": np.zeros((10, 7), np.float32)}, "idBase has shape (10, 7) but meanshape has 30"),
    ({"meantex": np.zeros((1, 12))}, "meantex has shape (1, 12)"),
    ({"tri": np.array([[1, 2, 31.0]])}, "tri out of range"),
    ({"keypoints": np.ones((1, 5))}, "keypoints has shape (1, 5), expected (1, 68)"),
    ({"point_buf": np.ones((29, 8))}, "point_buf has shape (29, 8)"),
    ({"skinmask": np.ones((1, 3))}, "skinmask has shape (1, 3)"),
    ({"meanshape": np.zeros((1, 91))}, "meanshape has shape (1, 91)"),
])
def test_error_mat_wrong_shapes(tmp_path, change, expect):
    path = tmp_path / "bad.mat"
    write_deng(path, **change)
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    assert expect in assert_one_line(e, path)


def test_error_npz_wrong_shapes(tmp_path):
    good = save_model(random_model(uv=False, names=False), tmp_path / "good.npz")
    bad = tmp_path / "m.npz"
    rewrite_npz(good, bad, mean_shape=np.zeros((12, 3), np.float32),
                id_basis=np.zeros((10, 3, 5), np.float32))
    with pytest.raises(ModelFileError) as e:
        load_model(bad)
    msg = assert_one_line(e, bad)
    assert "id_basis has shape (10, 3, 5) but mean_shape has 12 vertices" in msg
    assert "mean_albedo has shape (30, 3) but mean_shape has 12 vertices" in msg


@pytest.mark.parametrize("change, expect", [
    ({"format": np.asarray("something-else")}, "format is"),
    ({"format": None}, "not a face3dkit model file"),
    ({"format_version": np.asarray(2)}, "format_version 2 is not supported"),
    ({"exp_basis": None}, "missing keys exp_basis"),
    ({"faces": np.array([[0, 1, 30]], np.int32)}, "faces out of range"),
    ({"faces": np.zeros((4, 3), np.float32)}, "faces has dtype float32"),
    ({"landmark_idx": np.zeros(5, np.int32)}, "landmark_idx has shape (5,), expected (68,)"),
    ({"meta": np.asarray("{not json")}, "meta is not valid JSON"),
    ({"exp_names": np.array(["a"])}, "exp_names has shape (1,) but exp_basis has 4"),
    ({"uv": None}, "uv and face_uv must be given together"),
    ({"mean_shape": np.zeros((30, 2), np.float32)}, "mean_shape has shape (30, 2)"),
])
def test_error_npz_bad_contents(tmp_path, change, expect):
    good = save_model(random_model(), tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    rewrite_npz(good, bad, **change)
    with pytest.raises(ModelFileError) as e:
        load_model(bad)
    assert expect in assert_one_line(e, bad)


def test_error_npz_with_pickled_objects(tmp_path):
    good = save_model(random_model(), tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    rewrite_npz(good, bad, meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError) as e:
        load_model(bad)
    assert "pickle" in assert_one_line(e, bad)


def test_error_missing_file_empty_file_directory(tmp_path):
    for path, what in ((tmp_path / "nope.npz", "no such file"), (tmp_path, "is a directory")):
        with pytest.raises(ModelFileError) as e:
            load_model(path)
        assert what in assert_one_line(e, path)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError) as e:
        load_model(empty)
    assert "empty file" in assert_one_line(e, empty)


def test_error_unknown_name():
    with pytest.raises(ModelFileError) as e:
        load_model("bfm2019")
    msg = assert_one_line(e, "bfm2019")
    assert "unknown model name" in msg and "default" in msg
