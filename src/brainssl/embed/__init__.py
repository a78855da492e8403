"""Embed: frozen-encoder slice embeddings (and classical features), pooled per subject/session/contrast.

:func:`embed_index` is what the ``embed_encoder`` rule calls; the tables it writes are what
every frozen-feature task and the representation analysis read.
"""

from .embed import (
    CLASSICAL,
    SLICE_COLUMNS,
    UNIT_COLUMNS,
    EmbedSettings,
    classical_features,
    embed_index,
    encode_slices,
    feature_columns,
    load_embedding_encoder,
    pool_units,
)

__all__ = [
    "CLASSICAL",
    "SLICE_COLUMNS",
    "UNIT_COLUMNS",
    "EmbedSettings",
    "classical_features",
    "embed_index",
    "encode_slices",
    "feature_columns",
    "load_embedding_encoder",
    "pool_units",
]
