"""fer.conditioning: providers against the synthetic set's true pose; cache reuse and invalidation."""

import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from fer.conditioning import (
    GeometryCache,
    LandmarksProvider,
    NoGeometry,
    ThreeDMMProvider,
    attach_geometry,
    compute_geometry,
    get_provider,
)
from fer.conditioning.providers import GeometryUnavailableError, load_detector
from fer.data import SynthConfig, SyntheticDataset, generate_synthetic
from fer.data.formats import ImageFolderDataset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("geo_synth")
    generate_synthetic(out, SynthConfig(n=14, size=64, seed=5, n_identities=2), progress=False)
    return out


class Counting(LandmarksProvider):
    """A provider that records how many samples it was asked to compute."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[int] = []

    def compute(self, dataset, indices):
        self.calls.append(len(indices))
        return super().compute(dataset, indices)


def test_landmark_and_3dmm_pose_match_the_rendered_pose(synth):
    ds = SyntheticDataset(synth)
    for provider, tol in ((LandmarksProvider(), 8.0), (ThreeDMMProvider(landmark_iters=60), 8.0)):
        table = compute_geometry(ds, provider)
        assert table.valid.all() and table.stats["computed"] == 14
        yaw_err = np.abs(table.pose[:, 0] - ds.true_pose[:, 0])
        assert yaw_err.max() < tol, (provider.name, yaw_err)
        # Landmarks are normalised to the crop: back in pixels they are the csv's (3dmm: re-projected fit).
        px = table.landmarks * 64
        err = np.abs(px - ds.known_landmarks).mean()
        assert err < (1e-4 if provider.name == "landmarks" else 1.5), (provider.name, err)
        assert ((table.landmarks > 0) & (table.landmarks < 1)).mean() > 0.95


def test_3dmm_provider_follows_the_landmark_convention(synth):
    """Synthetic landmarks are projections of fixed vertices ('3d'): fitted without contour marching;
    the same points declared '2d' (detector-like) are fitted with marching and sliding."""
    import torch

    import face3dkit
    from face3dkit.fit import FitConfig, fit
    from face3dkit.geometry import PerspectiveCamera

    ds = SyntheticDataset(synth)
    assert ds.landmark_convention == "3d"
    model = face3dkit.load_model("default")
    lm = torch.as_tensor(ds.known_landmarks, dtype=torch.float32)
    images = torch.zeros(len(ds), 64, 64, 3)
    cam = PerspectiveCamera.for_image_size(64)
    expected = {
        "3d": FitConfig(landmark_iters=40, photo_iters=0, contour_marching=False, contour_tangent_weight=1.0),
        "2d": FitConfig(landmark_iters=40, photo_iters=0),
    }
    for convention, cfg in expected.items():
        ds.landmark_convention = convention
        table = compute_geometry(ds, ThreeDMMProvider(landmark_iters=40))
        ref = fit(model, images, lm, cfg, camera=cam)
        np.testing.assert_allclose(table.landmarks * 64, ref.landmarks2d.numpy(), atol=1e-3)
        deg = np.rad2deg(ref.coeffs.angles.numpy())
        np.testing.assert_allclose(table.pose[:, 0], deg[:, 1], atol=1e-3)
    # With the fixed-contour convention the fitted yaw is close to the rendered one.
    ds.landmark_convention = "3d"
    table = compute_geometry(ds, ThreeDMMProvider(landmark_iters=60))
    assert np.median(np.abs(table.pose[:, 0] - ds.true_pose[:, 0])) < 3.0


def test_none_provider_gives_no_geometry(synth):
    ds = SyntheticDataset(synth, image_size=32)
    table = compute_geometry(ds, NoGeometry())
    assert not table.valid.any() and np.isnan(table.pose).all() and (table.pose_class == -1).all()
    attach_geometry(ds, table)
    s = ds[0]
    assert s["pose_class"] == -1 and float(s["landmarks"].abs().sum()) == 0.0


def test_cache_reuse_and_invalidation(synth, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(synth, root)
    cache = GeometryCache(tmp_path / "cache")
    p1 = Counting()
    first = compute_geometry(SyntheticDataset(root), p1, cache)
    assert sum(p1.calls) == 14 and first.stats == {"provider": "landmarks", "cached": 0, "computed": 14, "failed": 0}
    # Reuse: a new process (new provider object) computes nothing and gets identical rows.
    p2 = Counting()
    second = compute_geometry(SyntheticDataset(root), p2, cache)
    assert p2.calls == [] and second.stats["cached"] == 14
    np.testing.assert_array_equal(first.pose, second.pose)
    np.testing.assert_array_equal(first.landmarks, second.landmarks)
    # Changing one image's content recomputes exactly that image.
    img = root / "images" / "000003.png"
    arr = np.array(Image.open(img))
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(img)
    p3 = Counting()
    third = compute_geometry(SyntheticDataset(root), p3, cache)
    assert sum(p3.calls) == 1 and third.stats["cached"] == 13
    # Different provider settings (another model file name, a different fit) use separate entries.
    p4 = ThreeDMMProvider(landmark_iters=5)
    p5 = ThreeDMMProvider(landmark_iters=6)
    assert cache.path(p4.settings()) != cache.path(p5.settings()) != cache.path(p1.settings())
    assert compute_geometry(SyntheticDataset(root), p4, cache).stats["computed"] == 14
    assert compute_geometry(SyntheticDataset(root), p4, cache).stats["cached"] == 14
    assert compute_geometry(SyntheticDataset(root), p5, cache).stats["computed"] == 14
    # A damaged cache file is recomputed, not trusted.
    cache.path(p1.settings()).write_bytes(b"garbage")
    assert compute_geometry(SyntheticDataset(root), Counting(), cache).stats["computed"] == 14


def test_real_images_without_detector_give_a_clear_error(tmp_path, monkeypatch):
    for name in ("happy", "sad"):
        (tmp_path / "d" / name).mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "d" / name / "x.png")
    monkeypatch.setitem(sys.modules, "face3dkit.landmarks", None)  # the package is absent
    with pytest.raises(GeometryUnavailableError, match="face3dkit.landmarks is not available"):
        load_detector()
    ds = ImageFolderDataset(tmp_path / "d")
    with pytest.raises(GeometryUnavailableError, match="--geometry none"):
        compute_geometry(ds, get_provider("landmarks"))
    assert compute_geometry(ds, get_provider("none")).stats["computed"] == 2


def test_get_provider_names():
    assert get_provider("3dmm", landmark_iters=7).settings()["landmark_iters"] == 7
    assert get_provider("landmarks", landmark_iters=7).name == "landmarks"
    with pytest.raises(ValueError, match="unknown geometry provider"):
        get_provider("depth")
