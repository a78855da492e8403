"""brainssl: self-supervised brain MRI foundation encoders as a reproducible workflow."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

try:
    __version__ = version("brainssl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load_encoder"]


def load_encoder(path: str | Path, device: Any = "cpu") -> nn.Module:
    """Load an exported encoder (``encoder.safetensors`` or its folder); never unpickles.

    A thin wrapper of :func:`brainssl.pretrain.export.load_encoder` that imports torch only
    when called, so ``import brainssl`` stays fast for the workflow's light jobs.

    Args:
        path: ``encoder.safetensors`` or the folder holding it.
        device: where to put the model.

    Returns:
        The encoder in eval mode; ``encoder(x)`` maps ``(B, 1, H, W)`` in ``[0, 1]`` to ``(B, D)``.
    """
    from brainssl.pretrain.export import load_encoder as _load

    return _load(path, device)
