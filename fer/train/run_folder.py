"""What a training run writes into its folder besides checkpoints: ``metrics.json`` /
``metrics.csv`` (one record per epoch), sample grids of generative models
(``samples/epoch_NNN.png``) and the final weights ``model.pt`` — each atomically. The
:class:`fer.train.Trainer` runs the loop and owns the checkpoint (model, optimizers, sampler and
RNG state); this writer owns the files a user reads."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from face3dkit.io import save_image
from face3dkit.io.atomic import atomic_open, atomic_write_text

__all__ = ["RunFolderWriter"]


class RunFolderWriter:
    """Writes the user-facing files of a run folder ``out``."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)

    def metrics(self, history: list[dict[str, Any]]) -> None:
        """``metrics.json`` and ``metrics.csv`` (columns: every key any record has, in first-seen order)."""
        atomic_write_text(self.out / "metrics.json", json.dumps(history, indent=2))
        keys: list[str] = []
        for r in history:
            keys += [k for k in r if k not in keys]
        with atomic_open(self.out / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in history:
                w.writerow(r)

    def samples(self, rows: list[torch.Tensor], epoch: int) -> Path:
        """``samples/epoch_<epoch>.png``: each of ``rows`` a (B, C, H, W) batch in [0, 1], laid side by
        side, rows stacked."""
        grid = torch.cat([torch.cat(list(t.float().cpu().clamp(0, 1)), 2) for t in rows], 1)
        img = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return save_image(img, self.out / "samples" / f"epoch_{epoch:03d}.png")

    def model(self, model: Any, epoch: int, epochs: int, global_step: int, path: str | os.PathLike | None = None
              ) -> Path:
        """Final weights for ``fer evaluate`` / ``fer predict``: ``{'kind', 'config', 'state_dict'}`` and the
        training position they come from (``epoch`` completed, ``epochs`` planned, ``global_step``)."""
        path = Path(path) if path is not None else self.out / "model.pt"
        with atomic_open(path) as f:
            torch.save({"kind": model.kind, "config": asdict(model.config), "state_dict": model.state_dict(),
                        "epoch": epoch, "epochs": epochs, "global_step": global_step}, f)
        return path
