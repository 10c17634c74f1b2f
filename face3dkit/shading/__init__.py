"""Shading: spherical-harmonics Lambertian lighting (Deng et al. 2019)."""

from face3dkit.shading.sh import AMBIENT_INIT, SH_CONSTANTS, SHShader, sh_basis, sh_shade, solve_sh_lighting

__all__ = ["AMBIENT_INIT", "SH_CONSTANTS", "SHShader", "sh_basis", "sh_shade", "solve_sh_lighting"]
