"""Training checkpoints that resume exactly and load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects), so
loading never runs untrusted code. It holds the method (student, teacher, loss buffers),
the optimizer, the grad scaler, the data position and every RNG state (torch CPU and
CUDA, numpy's legacy global, Python's ``random``, and named ``torch.Generator`` s). Files
are written atomically via :func:`brainssl.io.atomic_path`, so a job killed mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainssl.io import atomic_path

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "brainssl-pretrain-checkpoint/1"


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Return every RNG state as tensors and plain values (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore the states captured by :func:`capture_rng_state` (CUDA only when present)."""
    torch.set_rng_state(state["torch_cpu"])
    if state["torch_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    for name, g in (generators or {}).items():
        if name in state["generators"]:
            g.set_state(state["generators"][name])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors and plain values) atomically to ``path``.

    Raises:
        ValueError: if ``payload`` lacks the ``format`` tag.
    """
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint payload must carry format={CHECKPOINT_FORMAT!r}")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    logger.info("checkpoint written: %s (step %s)", path, payload.get("position", {}).get("step"))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; refuse files of another format.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a brainssl checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return payload
