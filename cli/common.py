"""Shared CLI plumbing: turn library errors into one-line messages and non-zero exit codes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _one_line(e: BaseException) -> str:
    text = str(e).strip().strip("'\"") or type(e).__name__
    return " ".join(text.split())


def fail_cleanly(fn: F) -> F:
    """Decorator: expected errors (bad files, bad values, I/O) exit 1 with ``Error: <one line>``.

    Click's own usage errors pass through unchanged (exit 2); unexpected exceptions keep their
    traceback, because they are bugs.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, KeyError, OSError, RuntimeError) as e:
            raise click.ClickException(_one_line(e)) from None

    return wrapper  # type: ignore[return-value]
