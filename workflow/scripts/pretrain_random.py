from pathlib import Path

from brainssl.jobs import job_context
from brainssl.pretrain import random_from_index

with job_context(snakemake) as job:
    card = random_from_index(
        snakemake.input.index,
        Path(snakemake.output.encoder).parent,
        {**snakemake.params.settings, "seed": job.seed},
        snakemake.params.probe,
    )
    job.extra.update(knn=card["knn_probe"])
