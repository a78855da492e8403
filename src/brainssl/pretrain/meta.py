"""The two self-supervised methods as modules: a trainable student plus an EMA teacher and a loss.

Each method exposes the same small interface used by :mod:`brainssl.pretrain.loop`:

* ``student``: the trainable module (wrapped in DDP by the loop); ``student(views)``;
* ``teacher``: the EMA copy (never trained by gradients);
* ``make_views(x, generator) -> list[Tensor]``: the augmented views of a batch;
* ``compute_loss(student_fn, views, sched) -> (loss, stats)``;
* ``update_teacher(momentum)`` once per optimizer step, with that step's scheduled momentum:
  at the start of the step, before the keys, when ``update_teacher_first`` (MoCo v3's
  ``moco/builder.py`` ``forward``), else after the optimizer step (DINO's ``main_dino.py``);
* ``encoder``: the student's backbone (probed and exported);
* ``last_layer``: parameters frozen during the first epoch(s) (DINO), else ``None``.

References:
    MoCo v3: Chen, Xie and He 2021, ICCV; facebookresearch/moco-v3 ``moco/builder.py``.
    DINO: Caron et al. 2021, ICCV; facebookresearch/dino ``main_dino.py``, ``utils.MultiCropWrapper``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .ema import copy_for_ema, update_momentum
from .heads import DINOHead, MLPHead
from .losses import DINOLoss, MoCoV3Loss

__all__ = ["MoCoV3", "DINO", "MultiCropStudent", "MoCoStudent"]

ViewFn = Callable[[torch.Tensor, torch.Generator], list[torch.Tensor]]
StudentFn = Callable[[list[torch.Tensor]], torch.Tensor]


class MoCoStudent(nn.Module):
    """Base encoder + projector + predictor; each view goes through separately (own BN statistics).

    Shapes:
        ``views``: list of ``(B, 1, H, W)``; returns ``(V, B, dim)``.
    """

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.encoder, self.projector, self.predictor = encoder, projector, predictor

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Return the predictor outputs ``(V, B, dim)`` of each view."""
        return torch.stack([self.predictor(self.projector(self.encoder(v))) for v in views])


class _MoCoMomentum(nn.Module):
    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.projector(self.encoder(v)) for v in views])


class MoCoV3(nn.Module):
    """MoCo v3: symmetric InfoNCE between predictor outputs and momentum-encoder keys.

    Args:
        encoder: backbone with ``embed_dim``.
        make_views: ``(x, generator) -> [view1, view2]``.
        dim: projection / prediction output width (256).
        mlp_dim: hidden width of both MLPs (4096).
        temperature: InfoNCE temperature (0.2 ViT, 1.0 ResNet).
        projector_layers: projector depth (3; the paper's ResNet uses 2).
    """

    last_layer = None
    #: The authors update the momentum encoder inside ``forward``, after the queries and before
    #: the keys, with the momentum of this step (facebookresearch/moco-v3 c349e6e2,
    #: ``moco/builder.py`` ``MoCo.forward``); the loop does so before the step's forward pass.
    update_teacher_first = True

    def __init__(
        self,
        encoder: nn.Module,
        make_views: ViewFn,
        dim: int = 256,
        mlp_dim: int = 4096,
        temperature: float = 0.2,
        projector_layers: int = 3,
    ) -> None:
        super().__init__()
        embed_dim = int(encoder.embed_dim)  # type: ignore[arg-type]
        projector = MLPHead(embed_dim, mlp_dim, dim, projector_layers, last_bn=True)
        predictor = MLPHead(dim, mlp_dim, dim, 2, last_bn=False)
        self.student = MoCoStudent(encoder, projector, predictor)
        self.teacher = _MoCoMomentum(copy.deepcopy(encoder), copy.deepcopy(projector))
        copy_for_ema(self.teacher.encoder, encoder)
        copy_for_ema(self.teacher.projector, projector)
        self.criterion = MoCoV3Loss(temperature)
        self._make_views = make_views

    @property
    def encoder(self) -> nn.Module:
        """The student backbone."""
        return self.student.encoder

    @property
    def eval_encoder(self) -> nn.Module:
        """The backbone that is probed and exported: the base encoder, as MoCo v3 evaluates it."""
        return self.student.encoder

    def make_views(self, x: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """Two augmented views of ``x``."""
        return self._make_views(x, generator)

    def compute_loss(
        self, student_fn: StudentFn, views: list[torch.Tensor], sched: dict[str, float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return ``infonce(q1, k2) + infonce(q2, k1)``."""
        q = student_fn(views[:2])
        with torch.no_grad():
            k = self.teacher(views[:2])
        return self.criterion(q[0], q[1], k[0], k[1]), {}

    def update_teacher(self, momentum: float) -> None:
        """EMA-update the momentum encoder and projector (at the start of a step, before the keys)."""
        update_momentum(self.student.encoder, self.teacher.encoder, momentum)
        update_momentum(self.student.projector, self.teacher.projector, momentum)


class MultiCropStudent(nn.Module):
    """Backbone + head over views of several resolutions (consecutive equal sizes are batched).

    Shapes:
        ``views``: list of V tensors ``(B, 1, H_v, W_v)``; returns ``(V, B, K)``.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Embed each run of equal-size views in one batch and return ``(V, B, K)`` head outputs."""
        groups: list[list[torch.Tensor]] = []
        for v in views:
            if groups and groups[-1][0].shape[-2:] == v.shape[-2:]:
                groups[-1].append(v)
            else:
                groups.append([v])
        emb = torch.cat([self.encoder(torch.cat(g)) for g in groups])
        return self.head(emb).reshape(len(views), views[0].shape[0], -1)


class DINO(nn.Module):
    """DINO: a student matches the centred, sharpened teacher over multi-crop views.

    Args:
        encoder: backbone with ``embed_dim``.
        make_views: ``(x, generator) -> [global1, global2, local1, ...]``.
        out_dim: prototypes K (65536).
        hidden_dim: head hidden width (2048).
        bottleneck_dim: head bottleneck (256).
        norm_last_layer: fix the last layer's weight-norm gain at 1.
        head_use_bn: batch normalisation in the head's hidden layers.
        student_temp: tau_s (0.1).
        center_momentum: centre EMA momentum (0.9).
    """

    #: The teacher follows the student after the optimizer step, with that step's momentum
    #: (facebookresearch/dino 7c446df5, ``main_dino.py`` ``train_one_epoch``).
    update_teacher_first = False

    def __init__(
        self,
        encoder: nn.Module,
        make_views: ViewFn,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        head_use_bn: bool = False,
    ) -> None:
        super().__init__()
        embed_dim = int(encoder.embed_dim)  # type: ignore[arg-type]
        head = DINOHead(embed_dim, out_dim, hidden_dim, bottleneck_dim, 3, norm_last_layer, head_use_bn)
        self.student = MultiCropStudent(encoder, head)
        self.teacher = copy.deepcopy(self.student)
        copy_for_ema(self.teacher, self.student)
        self.criterion = DINOLoss(out_dim, student_temp, center_momentum)
        self._make_views = make_views

    @property
    def encoder(self) -> nn.Module:
        """The student backbone."""
        return self.student.encoder

    @property
    def eval_encoder(self) -> nn.Module:
        """The backbone that is probed and exported: the teacher's.

        DINO evaluates and releases the teacher, a temporal ensemble of the student that
        outperforms it throughout training (Caron et al. 2021, "Impact of the choice of
        teacher network"; the authors' ``eval_knn.py`` loads the ``teacher`` checkpoint key).
        """
        return self.teacher.encoder

    @property
    def last_layer(self) -> nn.Module:
        """The weight-normed prototype layer, frozen during the first epoch(s)."""
        return self.student.head.last_layer

    def make_views(self, x: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """Two global then N local views of ``x``."""
        return self._make_views(x, generator)

    def compute_loss(
        self, student_fn: StudentFn, views: list[torch.Tensor], sched: dict[str, float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """DINO loss at the scheduled teacher temperature; updates the centre afterwards."""
        with torch.no_grad():
            t = self.teacher(views[:2])
        s = student_fn(views)
        loss = self.criterion(s, t, sched["teacher_temp"])
        self.criterion.update_center(t)
        return loss, {"teacher_temp": sched["teacher_temp"]}

    def update_teacher(self, momentum: float) -> None:
        """EMA-update the whole teacher (backbone and head), after the optimizer step."""
        update_momentum(self.student, self.teacher, momentum)
