"""The one network of every dense task: a shared encoder's feature maps into a light full-resolution decoder.

The encoder's four feature maps (``forward_features``) feed :class:`DenseDecoder`, a
feature-pyramid top-down fusion followed by progressive x2 upsampling (as in SETR-PUP, Zheng
et al. 2021, CVPR) and a full-resolution image stem concatenated before the output
convolution (the input skip of UNETR, Hatamizadeh et al. 2022, WACV). For a ResNet the
pyramid levels are its stage outputs at strides 4-32 (U-Net-like skips); for a ViT the four
token maps share stride 16, and the image stem carries the fine detail. Several contrasts
pass the *shared* encoder one by one and their maps are concatenated channel-wise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .dense_memory import RowSource

__all__ = ["DenseDecoder", "DenseModel", "encode_contrasts", "encode_slices", "feature_bytes"]


def _conv(in_ch: int, out_ch: int) -> nn.Sequential:
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class DenseDecoder(nn.Module):
    """Light decoder from four encoder maps (plus the input image) to full-resolution outputs.

    Args:
        level_dims: channels of the four maps (already multiplied by the number of contrasts).
        image_channels: channels of the input image (contrasts).
        out_channels: output channels (classes, regions, heatmap + sizes, or one image).
        width: channels inside the decoder.

    Shapes:
        features: four ``(B, level_dims[i], h_i, w_i)`` maps; image ``(B, image_channels, H, W)``
        -> ``(B, out_channels, H, W)``.
    """

    def __init__(self, level_dims: Sequence[int], image_channels: int, out_channels: int, width: int = 32):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(d, width, 1) for d in level_dims)
        self.fuse = _conv(width, width)
        self.up = _conv(width, width)
        self.stem = nn.Sequential(_conv(image_channels, width // 2), _conv(width // 2, width // 2))
        self.head = nn.Sequential(_conv(width + width // 2, width), nn.Conv2d(width, out_channels, 1))

    def forward(self, features: Sequence[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """Fuse the pyramid top-down, upsample x2 until the image size, add the image stem."""
        x = self.lateral[-1](features[-1])
        for lateral, feature in zip(self.lateral[-2::-1], features[-2::-1], strict=True):
            x = F.interpolate(x, size=feature.shape[-2:], mode="bilinear", align_corners=False)
            x = x + lateral(feature)
        x = self.fuse(x)
        size = image.shape[-2:]
        while x.shape[-2] * 2 <= size[0] and x.shape[-1] * 2 <= size[1]:
            x = self.up(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.head(torch.cat([x, self.stem(image)], dim=1))


class DenseModel(nn.Module):
    """Shared encoder over contrasts + :class:`DenseDecoder`; frozen or trained end to end.

    Args:
        encoder: a :func:`~brainssl.pretrain.backbones.build_encoder` encoder (one input channel).
        n_contrasts: input channels, each passed through the encoder separately.
        out_channels: decoder outputs.
        frozen: keep the encoder in eval mode without gradients.
        width: decoder width.
        residual: add the first input channel to output channel 0, the output layer starting at zero
            (reconstruction refines its input).
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_contrasts: int,
        out_channels: int,
        *,
        frozen: bool,
        width: int = 32,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.frozen = frozen
        self.residual = residual
        self.n_contrasts = n_contrasts
        with torch.no_grad():
            where = next(encoder.parameters()).device
            probe = encoder.forward_features(torch.zeros(1, 1, *_input_side(encoder), device=where))
        dims = [m.shape[1] * n_contrasts for m in probe]
        self.decoder = DenseDecoder(dims, n_contrasts, out_channels, width)
        if residual:
            # an untrained refiner returns its input, so training starts from the input's quality
            nn.init.zeros_(self.decoder.head[-1].weight)
            nn.init.zeros_(self.decoder.head[-1].bias)
        if frozen:
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> DenseModel:
        """Switch to training mode, leaving a frozen encoder in eval mode (BatchNorm/dropout fixed)."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, H, W)`` -> four maps ``(B, C * D_i, h_i, w_i)`` through the shared encoder."""
        return encode_contrasts(self.encoder, images)

    def forward(self, images: torch.Tensor, features: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Predict from images; ``features`` may carry cached maps of a frozen encoder."""
        if features is None:
            if self.frozen:
                with torch.no_grad():
                    features = self.encode(images)
            else:
                features = self.encode(images)
        out = self.decoder(features, images)
        if self.residual:
            out = torch.cat([out[:, :1] + images[:, :1], out[:, 1:]], dim=1)
        return out


def _input_side(encoder: nn.Module) -> tuple[int, int]:
    side = int(encoder.config["img_size"])  # type: ignore[index]
    return side, side


def encode_contrasts(encoder: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Pass each contrast of ``(B, C, H, W)`` through the shared encoder; concatenate the maps channel-wise.

    Returns:
        Four maps ``(B, C * D_i, h_i, w_i)``.
    """
    b, c = images.shape[:2]
    maps = encoder.forward_features(images.reshape(b * c, 1, *images.shape[-2:]))
    return [m.reshape(b, c * m.shape[1], *m.shape[-2:]) for m in maps]


@torch.no_grad()
def encode_slices(
    encoder: nn.Module, images: RowSource, batch_size: int = 64, device: str | torch.device = "cpu"
) -> list[torch.Tensor]:
    """Cache a frozen encoder's maps of ``(N, C, S, S)`` slices (contrasts through the shared encoder).

    Only while they fit ``feature_cache_gb`` (:func:`feature_bytes`); the sweep otherwise runs the
    frozen encoder on every batch.

    The encoder runs on ``device`` (bf16 autocast on CUDA); the maps are kept on the host in float32,
    and training copies each batch's maps to the device.
    """
    from .dense_memory import batch_tensor
    from .dense_training import autocast, resolve_device, to_device

    device = resolve_device(device)
    encoder.to(device)
    encoder.eval()
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, len(images), batch_size):
        batch = to_device(batch_tensor(images, slice(start, start + batch_size)), device)
        with autocast(device):
            maps = encode_contrasts(encoder, batch)
        chunks.append([m.float().cpu() for m in maps])
    if not chunks:
        raise ValueError("no slices to encode")
    return [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))]


@torch.no_grad()
def feature_bytes(encoder: nn.Module, n_contrasts: int) -> int:
    """Bytes of one slice's cached maps (float32, ``n_contrasts`` through the encoder), from a probe.

    The probe runs in eval mode (as the cache would), so it draws no random numbers.
    """
    encoder.eval()
    where = next(encoder.parameters()).device
    maps = encoder.forward_features(torch.zeros(1, 1, *_input_side(encoder), device=where))
    return n_contrasts * sum(m.numel() for m in maps) * 4
