"""Command-line entry points (installed as ``face3dkit._cli``; ``face3dkit`` and ``fer`` commands)."""
