"""Which encoders a task compares, and the paired subject bootstrap of each pair.

Pretrained encoders are compared with the baselines (random initialisation, classical
features, supervised from scratch) and with each other; a slice-filter ablation run only with
its filtered run and the random encoder (:mod:`brainssl.ablation`). ``diff`` is always the
``encoder`` minus the ``baseline`` it is compared with, on the subjects both were tested on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from brainssl.ablation import ablation_pairs, ablation_variant

from .metrics import CLASSIFICATION_METRICS, mean_absolute_error
from .results import paired_bootstrap
from .units import TaskSpec, TaskUnits, budget_columns

if TYPE_CHECKING:
    from .frozen import Prediction

__all__ = [
    "COMPARISON_COLUMNS",
    "classification_metrics",
    "comparison_pairs",
    "is_baseline",
    "paired_comparisons",
]

COMPARISON_COLUMNS = (
    "task",
    "dataset",
    "metric",
    "label_fraction",
    "shots",
    "seed",
    "encoder",
    "baseline",
    "diff",
    "ci_low",
    "ci_high",
    "p_value",
)


def is_baseline(name: str) -> bool:
    """Whether an encoder is a baseline that pretrained encoders are compared against."""
    return name == "classical" or name.startswith(("random-", "scratch-"))


def classification_metrics(spec: TaskSpec) -> dict[str, Callable[..., float]]:
    """The metric functions of a classification task's declared metrics."""
    return {name: CLASSIFICATION_METRICS[name] for name in spec.metrics}


def paired_comparisons(
    spec: TaskSpec,
    units: TaskUnits,
    predictions: Mapping[str, Mapping[tuple[float, int], Prediction]],
    n_boot: int,
) -> list[dict[str, Any]]:
    """Paired subject bootstrap per metric and reported cell of every :func:`comparison_pairs` pair.

    ``diff`` is ``encoder`` minus ``baseline`` (the encoder compared with); skipped cells are
    not compared.
    """
    if spec.kind not in ("multiclass", "binary", "regression"):
        return []
    metrics: dict[str, Callable[..., float]] = (
        classification_metrics(spec) if spec.kind != "regression" else {"mae": mean_absolute_error}
    )
    out = []
    for encoder, baseline in comparison_pairs(list(predictions)):
        for key, pred in sorted(predictions[encoder].items()):
            other = predictions[baseline].get(key)
            if other is None or pred.short or other.short:
                continue
            tested = pred.tested & other.tested
            for name, metric in metrics.items():
                stats = paired_bootstrap(
                    metric,
                    units.target[tested],
                    pred.values[tested],
                    other.values[tested],
                    n_boot=n_boot,
                    seed=key[1],
                    groups=units.subjects[tested],
                )
                out.append(
                    {
                        "task": spec.name,
                        "dataset": spec.dataset,
                        "metric": name,
                        **budget_columns(key[0]),
                        "seed": key[1],
                        "encoder": encoder,
                        "baseline": baseline,
                        **stats,
                    }
                )
    return out


def comparison_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """The (encoder, compared-with) pairs of the paired comparisons, in order.

    Every pretrained (non-baseline) encoder against every baseline, then every two pretrained
    encoders (the first by name as ``encoder``); baselines are not compared with each other. A
    slice-filter ablation run (``moco-vit_tiny-subset``, :mod:`brainssl.ablation`) is compared only
    with its filtered run (which comes first: its gain is the filter's) and its random encoder.
    """
    pretrained = sorted(n for n in names if not is_baseline(n) and not ablation_variant(n))
    baselines = [n for n in names if is_baseline(n)]
    pairs = [(e, b) for e in pretrained for b in baselines]
    pairs += [(a, b) for i, a in enumerate(pretrained) for b in pretrained[i + 1 :]]
    return pairs + ablation_pairs(names)
