"""SH shading checked against Deng et al.'s equations written out in numpy."""

import math

import numpy as np
import torch

from face3dkit.shading import sh_basis, sh_shade


def np_basis(n: np.ndarray) -> np.ndarray:
    a0, a1, a2 = math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8)
    c0, c1 = 1 / math.sqrt(4 * math.pi), math.sqrt(3) / math.sqrt(4 * math.pi)
    c2 = 3 * math.sqrt(5) / math.sqrt(12 * math.pi)
    x, y, z = n
    return np.array([
        a0 * c0, -a1 * c1 * y, a1 * c1 * z, -a1 * c1 * x, a2 * c2 * x * y, -a2 * c2 * y * z,
        0.5 * a2 * c2 / math.sqrt(3) * (3 * z * z - 1), -a2 * c2 * x * z, 0.5 * a2 * c2 * (x * x - y * y),
    ])


def test_basis_known_normals():
    for n in ([0, 0, 1], [1, 0, 0], [0, -1, 0], list(np.array([1, 2, 2]) / 3)):
        got = sh_basis(torch.tensor(n, dtype=torch.float64)).numpy()
        np.testing.assert_allclose(got, np_basis(np.array(n, dtype=float)), atol=1e-12)


def test_ambient_only_frontal():
    # gamma = 0: colour = albedo * 0.8 * a0 * c0 = albedo * 0.8 * pi / sqrt(4 pi).
    albedo = torch.tensor([[[0.5, 0.25, 1.0]]], dtype=torch.float64)
    n = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)
    out = sh_shade(albedo, n, torch.zeros(1, 27, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(out[0, 0], albedo[0, 0].numpy() * 0.8 * math.pi / math.sqrt(4 * math.pi))


def test_random_lighting_matches_numpy():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(2, 7, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    albedo = rng.uniform(size=(2, 7, 3))
    gamma = rng.normal(scale=0.3, size=(2, 27))
    out = sh_shade(torch.tensor(albedo), torch.tensor(n), torch.tensor(gamma)).numpy()
    for b in range(2):
        g = gamma[b].reshape(3, 9).copy()
        g[:, 0] += 0.8
        for v in range(7):
            irr = g @ np_basis(n[b, v])  # (3,) per channel
            np.testing.assert_allclose(out[b, v], irr * albedo[b, v], atol=1e-12)
