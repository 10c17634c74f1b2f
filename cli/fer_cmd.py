"""The ``fer`` command."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="face3dkit")
def main() -> None:
    """fer: facial-expression recognition GANs conditioned on face3dkit geometry."""


if __name__ == "__main__":  # pragma: no cover
    main()
