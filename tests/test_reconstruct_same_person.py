"""`face3dkit reconstruct --same-person`: identity and albedo aggregated over every face of the run
(plain mean, or a C-Net's confidences), the other blocks per photo; identity.npz; errors."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import face3dkit
from face3dkit._cli.face3dkit_cmd import main
from face3dkit.geometry import PerspectiveCamera
from face3dkit.nets import CNet, RNet
from face3dkit.viz import render_faces

pytestmark = pytest.mark.slow

N_PHOTOS = 3


@pytest.fixture(scope="module")
def scene(tmp_path_factory, one_thread):
    """One identity in three 320 px photos (different yaw, expression, light), landmark files next to
    them; an R-Net whose identity / albedo / expression heads are random (its regressions differ
    from photo to photo) and a C-Net with random confidences."""
    root = tmp_path_factory.mktemp("same")
    photos = root / "photos"
    photos.mkdir()
    m = face3dkit.load_model("default")
    g = torch.Generator().manual_seed(7)
    base = m.sample(1, generator=g, id_scale=0.6, tex_scale=0.6)
    cam = PerspectiveCamera(focal=1015 * 320 / 224, cx=160.0, cy=160.0, image_size=(320, 320))
    for k, yaw in enumerate((-20.0, 5.0, 25.0)):
        c = base.clone()
        c.exp = torch.rand(1, m.n_exp, generator=g) * 0.4
        c.angles[:, 1] = math.radians(yaw)
        c.gamma[:, 0] += 0.1 * k
        Image.fromarray(render_faces(m, c, camera=cam, background=0.4 + 0.1 * k)[0]).save(photos / f"p{k}.png")
        with torch.no_grad():
            np.save(photos / f"p{k}.npy", m(c, camera=cam).landmarks2d[0].numpy())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        rnet = RNet(m.layout, "resnet18", input_size=64)
        for i in (0, 1, 2):  # identity, expression, albedo
            torch.nn.init.normal_(rnet.final_layers[i].weight, std=0.05)
        cnet = CNet(rnet.feature_channels, m.layout.n_id, m.layout.n_tex, width=8)
        torch.nn.init.normal_(cnet.head.weight, std=1.0)
    rnet_path = rnet.save(root / "rnet.pt")
    cnet_path = cnet.save(root / "cnet.pt")
    bad = CNet(rnet.feature_channels, m.layout.n_id + 1, m.layout.n_tex, width=8).save(root / "bad_cnet.pt")
    return photos, rnet_path, cnet_path, bad, m


def _run(args):
    r = CliRunner().invoke(main, ["reconstruct", *args, "--landmarks", "file", "--save", "npz,pose",
                                  "--no-progress", "--threads", "1"])
    return r


def _coeffs(out, m):
    got = {}
    for k in range(N_PHOTOS):
        z = np.load(out / f"p{k}" / f"p{k}.npz")
        got[k] = {b: z[b].reshape(-1) for b in ("id", "tex", "exp", "angle")}
    return got


def test_same_person_shares_the_mean_identity(scene, tmp_path):
    photos, rnet, _, _, m = scene
    # Per-photo regressions (no aggregation): the reference the aggregate is recomputed from.
    r = _run([str(photos), "-o", str(tmp_path / "single"), "--method", "rnet", "--rnet", str(rnet)])
    assert r.exit_code == 0, r.output
    single = _coeffs(tmp_path / "single", m)
    out = tmp_path / "same"
    r = _run([str(photos), "-o", str(out), "--same-person", "--rnet", str(rnet)])
    assert r.exit_code == 0, r.output
    assert f"{N_PHOTOS} face(s) reconstructed" in r.output and "plain mean" in r.output
    same = _coeffs(out, m)
    mean_id = np.mean([single[k]["id"] for k in range(N_PHOTOS)], 0)
    mean_tex = np.mean([single[k]["tex"] for k in range(N_PHOTOS)], 0)
    assert np.abs(single[0]["id"] - single[1]["id"]).max() > 1e-3  # the regressions do differ
    ident = np.load(out / "identity.npz")
    for k in range(N_PHOTOS):
        assert np.array_equal(same[k]["id"], same[0]["id"]) and np.array_equal(same[k]["tex"], same[0]["tex"])
        np.testing.assert_allclose(same[k]["exp"], single[k]["exp"], rtol=1e-5, atol=1e-6)  # per photo
        np.testing.assert_allclose(same[k]["angle"], single[k]["angle"], rtol=1e-5, atol=1e-6)
    assert np.abs(same[0]["exp"] - same[1]["exp"]).max() > 1e-3 and np.abs(same[1]["exp"] - same[2]["exp"]).max() > 1e-3
    np.testing.assert_allclose(same[0]["id"], mean_id, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(same[0]["tex"], mean_tex, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ident["id"], same[0]["id"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ident["tex"], same[0]["tex"], rtol=1e-6, atol=1e-7)
    assert ident["conf_id"].shape == (N_PHOTOS, m.n_id) and np.all(ident["conf_id"] == 1)
    assert sorted(str(x).split("/")[-1] for x in ident["images"]) == [f"p{k}.png" for k in range(N_PHOTOS)]
    assert str(ident["cnet"]) == ""
    marker = json.loads((out / "p0" / "p0.done.json").read_text())
    assert marker["settings"]["same_person"] is True and marker["settings"]["cnet_sha256"] is None
    single_marker = json.loads((tmp_path / "single" / "p0" / "p0.done.json").read_text())
    assert marker["settings_fingerprint"] != single_marker["settings_fingerprint"]
    # Resumed: every face finished with the same settings is skipped, identity.npz left alone.
    stamp = (out / "identity.npz").stat().st_mtime_ns
    r = _run([str(photos), "-o", str(out), "--same-person", "--rnet", str(rnet)])
    assert r.exit_code == 0 and f"{N_PHOTOS} already done" in r.output, r.output
    assert (out / "identity.npz").stat().st_mtime_ns == stamp
    # One photo fewer: another set of inputs, every face redone with its new aggregate.
    r = _run([str(photos / "p0.png"), str(photos / "p1.png"), "-o", str(out), "--same-person", "--rnet", str(rnet)])
    assert r.exit_code == 0 and "2 face(s) reconstructed" in r.output, r.output
    two = np.load(out / "identity.npz")
    np.testing.assert_allclose(two["id"], (single[0]["id"] + single[1]["id"]) / 2, rtol=1e-5, atol=1e-6)


def test_same_person_with_cnet_confidences(scene, tmp_path):
    photos, rnet, cnet, _, m = scene
    r = _run([str(photos), "-o", str(tmp_path / "single"), "--method", "rnet", "--rnet", str(rnet)])
    assert r.exit_code == 0, r.output
    single = _coeffs(tmp_path / "single", m)
    out = tmp_path / "same"
    r = _run([str(photos), "-o", str(out), "--same-person", "--rnet", str(rnet), "--cnet", str(cnet)])
    assert r.exit_code == 0, r.output
    assert "C-Net confidences" in r.output
    ident = np.load(out / "identity.npz")
    order = [int(str(x).split("/")[-1][1]) for x in ident["images"]]
    ci, ct = ident["conf_id"], ident["conf_tex"]
    assert np.all(ci > 0) and np.abs(ci - 1).max() > 0.05  # not the plain mean
    ids = np.stack([single[k]["id"] for k in order])
    texs = np.stack([single[k]["tex"] for k in order])
    np.testing.assert_allclose(ident["id"], (ci * ids).sum(0) / ci.sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ident["tex"], (ct * texs).sum(0) / ct.sum(0), rtol=1e-4, atol=1e-6)
    same = _coeffs(out, m)
    for k in range(N_PHOTOS):
        np.testing.assert_allclose(same[k]["id"], ident["id"], rtol=1e-6, atol=1e-7)
    marker = json.loads((out / "p0" / "p0.done.json").read_text())
    assert marker["settings"]["cnet_sha256"] and marker["settings"]["cnet"].endswith("cnet.pt")
    assert str(ident["cnet"]).endswith("cnet.pt")


def test_same_person_errors(scene, tmp_path):
    photos, rnet, cnet, bad, _ = scene
    o = ["-o", str(tmp_path / "o")]
    r = _run([str(photos), *o, "--same-person"])
    assert r.exit_code == 2 and "--same-person needs --rnet" in r.output
    r = _run([str(photos), *o, "--same-person", "--rnet", str(rnet), "--method", "fit"])
    assert r.exit_code == 2 and "--method rnet or rnet+fit" in r.output
    r = _run([str(photos), *o, "--rnet", str(rnet), "--method", "rnet", "--cnet", str(cnet)])
    assert r.exit_code == 2 and "--cnet is used only with --same-person" in r.output
    r = _run([str(photos), *o, "--same-person", "--rnet", str(rnet), "--cnet", str(bad)])
    assert r.exit_code == 1 and "bad_cnet.pt" in r.output and "does not fit" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = _run([str(photos), *o, "--same-person", "--rnet", str(rnet), "--cnet", str(tmp_path / "none.pt")])
    assert r.exit_code == 1 and "none.pt: no such C-Net checkpoint" in r.output
    r = CliRunner().invoke(main, ["reconstruct", str(photos), *o, "--same-person", "--rnet", str(rnet),
                                  "--landmarks", "file", "--no-progress", "--threads", "1"], env={"WORLD_SIZE": "2"})
    assert r.exit_code == 1 and "WORLD_SIZE=2" in r.output and "Traceback" not in r.output
    from face3dkit.pipeline import ReconstructConfig, reconstruct

    with pytest.raises(ValueError, match="same_person needs an R-Net"):
        reconstruct([photos], None, ReconstructConfig(same_person=True, method="rnet"))


def test_same_person_rnet_plus_fit_starts_from_the_aggregate(scene, tmp_path, monkeypatch):
    """With rnet+fit (--same-person-identity aggregate) the fit starts from the aggregated
    coefficients and holds identity and albedo: every face keeps the aggregate's id / tex exactly,
    while its own pose is fitted (it moves). With the default (joint) one identity and albedo are
    fitted to the photos together from that aggregate, once (those faces keep that fit): every face
    has that one, which is not the aggregate (kept in identity.npz as id_aggregate, equal to the
    regressions' mean)."""
    photos, rnet, _, _, m = scene
    r = _run([str(photos), "-o", str(tmp_path / "reg"), "--same-person", "--rnet", str(rnet), "--method", "rnet"])
    assert r.exit_code == 0, r.output
    reg = _coeffs(tmp_path / "reg", m)
    aggregate = np.load(tmp_path / "reg" / "identity.npz")
    fit_args = ["--same-person", "--rnet", str(rnet), "--method", "rnet+fit", "--landmark-iters", "3", "--iters", "0"]
    out = tmp_path / "fit"
    r = _run([str(photos), "-o", str(out), *fit_args, "--same-person-identity", "aggregate"])
    assert r.exit_code == 0, r.output
    ident = np.load(out / "identity.npz")
    assert "id_aggregate" not in ident.files and "jointly" not in r.output
    np.testing.assert_allclose(ident["id"], aggregate["id"], rtol=1e-6, atol=1e-7)
    same = _coeffs(out, m)
    assert all(np.isfinite(same[k]["id"]).all() for k in range(N_PHOTOS))
    for k in range(N_PHOTOS):
        np.testing.assert_allclose(same[k]["id"], ident["id"].reshape(-1), rtol=0, atol=1e-6)
        np.testing.assert_allclose(same[k]["tex"], ident["tex"].reshape(-1), rtol=0, atol=1e-6)
    assert any(np.abs(same[k]["angle"] - reg[k]["angle"]).max() > 1e-6 for k in range(N_PHOTOS))  # fitted
    marker = json.loads((out / "p0" / "p0.done.json").read_text())
    assert marker["settings"]["method"] == "rnet+fit" and marker["settings"]["same_person"] is True
    assert marker["settings"]["same_person_identity"] == "aggregate"

    joint_out = tmp_path / "joint"
    import face3dkit.pipeline.run as run_mod

    calls = []
    real_fit = run_mod.fit

    def counting_fit(*a, **kw):
        calls.append((a[1].shape[0], tuple(kw.get("shared", ())), tuple(kw.get("fixed", ()))))
        return real_fit(*a, **kw)

    monkeypatch.setattr(run_mod, "fit", counting_fit)
    r = _run([str(photos), "-o", str(joint_out), *fit_args])
    assert r.exit_code == 0 and "fitted to the photos jointly" in r.output, r.output
    assert calls == [(N_PHOTOS, ("id", "tex"), ())]  # one joint fit; its faces are not fitted again
    joint = np.load(joint_out / "identity.npz")
    np.testing.assert_allclose(joint["id_aggregate"], aggregate["id"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(joint["tex_aggregate"], aggregate["tex"], rtol=1e-6, atol=1e-7)
    assert joint["joint"].tolist() == [True] * N_PHOTOS
    assert np.abs(joint["id"] - joint["id_aggregate"]).max() > 1e-4  # the joint fit moved the identity
    js = _coeffs(joint_out, m)
    for k in range(N_PHOTOS):
        np.testing.assert_allclose(js[k]["id"], joint["id"].reshape(-1), rtol=0, atol=1e-6)
        np.testing.assert_allclose(js[k]["tex"], joint["tex"].reshape(-1), rtol=0, atol=1e-6)
    marker = json.loads((joint_out / "p0" / "p0.done.json").read_text())
    assert marker["settings"]["same_person_identity"] == "joint"
    # More faces than the joint fit takes: evenly spaced ones fitted jointly, the rest with it held.
    monkeypatch.setattr(run_mod, "JOINT_FIT_MAX_FACES", 2)
    calls.clear()
    capped = tmp_path / "capped"
    r = _run([str(photos), "-o", str(capped), *fit_args])
    assert r.exit_code == 0, r.output
    assert calls == [(2, ("id", "tex"), ()), (1, (), ("id", "tex"))], calls
    ident = np.load(capped / "identity.npz")
    assert ident["joint"].tolist() == [True, False, True]
    cs = _coeffs(capped, m)
    for k in range(N_PHOTOS):
        np.testing.assert_allclose(cs[k]["id"], ident["id"].reshape(-1), rtol=0, atol=1e-6)


def test_same_person_joint_fit_failing_at_run_time_falls_back_to_the_aggregate(scene, tmp_path, monkeypatch, caplog):
    """A joint identity fit that fails at run time (e.g. out of memory) does not lose the run: a
    warning, and every face is fitted holding the aggregate (identity.npz without id_aggregate)."""
    import face3dkit.pipeline.run as run_mod

    photos, rnet, _, _, m = scene
    real_fit = run_mod.fit

    def failing_joint(*a, **kw):
        if kw.get("shared"):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_fit(*a, **kw)

    monkeypatch.setattr(run_mod, "fit", failing_joint)
    out = tmp_path / "o"
    with caplog.at_level("WARNING", logger="face3dkit.pipeline"):
        r = _run([str(photos), "-o", str(out), "--same-person", "--rnet", str(rnet), "--method", "rnet+fit",
                  "--landmark-iters", "3", "--iters", "0"])
    assert r.exit_code == 0 and f"{N_PHOTOS} face(s) reconstructed" in r.output, r.output
    assert any("joint identity fit" in rec.message and "out of memory" in rec.message for rec in caplog.records)
    ident = np.load(out / "identity.npz")
    assert "id_aggregate" not in ident.files
    same = _coeffs(out, m)
    for k in range(N_PHOTOS):
        np.testing.assert_allclose(same[k]["id"], ident["id"].reshape(-1), rtol=0, atol=1e-6)
