"""The ``face3dkit`` command."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="face3dkit")
def main() -> None:
    """face3dkit: differentiable 3D face reconstruction."""


if __name__ == "__main__":  # pragma: no cover
    main()
