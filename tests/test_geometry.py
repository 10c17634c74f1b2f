"""Rotations, projection and POS against numpy re-derivations of Deng et al.'s equations."""

import math

import numpy as np
import pytest
import torch

from face3dkit.geometry import (
    PerspectiveCamera,
    euler_to_rotation,
    perspective_project,
    pos_similarity,
    rigid_transform,
    rotation_to_euler,
    weak_perspective_project,
)


def np_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rz = np.array([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_rotation_matches_numpy_and_is_orthonormal():
    rng = np.random.default_rng(0)
    ang = rng.uniform(-math.pi, math.pi, size=(16, 3))
    r = euler_to_rotation(torch.tensor(ang, dtype=torch.float64)).numpy()
    for a, m in zip(ang, r, strict=True):
        np.testing.assert_allclose(m, np_rotation(*a), atol=1e-12)
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
        assert abs(np.linalg.det(m) - 1) < 1e-12


def test_known_angles():
    # yaw +90 deg turns the face's forward axis (+z) to +x.
    r = euler_to_rotation(torch.tensor([[0.0, math.pi / 2, 0.0]], dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    # pitch +90 deg: +y (up) goes to +z (toward the camera).
    r = euler_to_rotation(torch.tensor([[math.pi / 2, 0.0, 0.0]], dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(r @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    # roll +90 deg: +x goes to +y.
    r = euler_to_rotation(torch.tensor([[0.0, 0.0, math.pi / 2]], dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_euler_round_trip():
    rng = np.random.default_rng(1)
    ang = torch.tensor(rng.uniform([-1.2, -1.4, -1.2], [1.2, 1.4, 1.2], size=(64, 3)), dtype=torch.float64)
    np.testing.assert_allclose(rotation_to_euler(euler_to_rotation(ang)).numpy(), ang.numpy(), atol=1e-9)


def test_rigid_transform_row_vectors():
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(2, 5, 3))
    ang = rng.normal(size=(2, 3))
    t = rng.normal(size=(2, 3))
    out = rigid_transform(torch.tensor(pts), torch.tensor(ang), torch.tensor(t)).numpy()
    for b in range(2):
        np.testing.assert_allclose(out[b], pts[b] @ np_rotation(*ang[b]).T + t[b], atol=1e-12)


def test_perspective_projection_known_points():
    pts = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, -0.5, 2.0]]], dtype=torch.float64)
    out = perspective_project(pts).numpy()[0]
    f, c, d = 1015.0, 112.0, 10.0
    expected = [[c, c, d], [c + f / d, c, d], [c, c - f / d, d], [c + f * 0.5 / 8, c + f * 0.5 / 8, 8.0]]
    np.testing.assert_allclose(out, expected, atol=1e-9)
    cam = PerspectiveCamera(focal=500.0, cx=64.0, cy=32.0, camera_distance=5.0, image_size=(64, 128))
    np.testing.assert_allclose(cam.project(pts)[0, 1].numpy(), [64 + 500 / 5, 32], atol=1e-9)
    assert cam.height_width == (64, 128)


def test_weak_perspective():
    pts = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64)
    out = weak_perspective_project(pts, torch.tensor([2.0], dtype=torch.float64),
                                   torch.tensor([[10.0, 20.0]], dtype=torch.float64), image_size=100)
    np.testing.assert_allclose(out[0, 0].numpy(), [12.0, 100 - 24.0, -3.0])


@pytest.mark.parametrize("n", [5, 68])
def test_pos_recovers_similarity(n):
    rng = np.random.default_rng(n)
    x3 = rng.normal(size=(n, 3))
    r = np_rotation(0.2, -0.5, 0.1)
    s, t = 37.0, np.array([101.0, 87.0])
    x2 = s * (x3 @ r.T)[:, :2] + t
    res = pos_similarity(torch.tensor(x2), torch.tensor(x3))
    assert abs(res.scale.item() - s) < 1e-6
    np.testing.assert_allclose(res.trans[0].numpy(), t, atol=1e-6)
    np.testing.assert_allclose(res.rotation[0].numpy(), r, atol=1e-6)


def test_pos_rejects_bad_shapes():
    with pytest.raises(ValueError, match="at least 4"):
        pos_similarity(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="expected"):
        pos_similarity(torch.zeros(5, 3), torch.zeros(5, 3))
