from pathlib import Path

from brainssl.jobs import job_context
from brainssl.pretrain.natural_export import natural_from_index

with job_context(snakemake) as job:
    card = natural_from_index(
        snakemake.input.index,
        Path(snakemake.output.encoder).parent,
        snakemake.params.natural["baseline"],
        {**snakemake.params.natural["settings"], "seed": job.seed},
        snakemake.params.probe,
    )
    job.extra.update(knn=card["knn_probe"], layout=card["natural_source"]["layout"])
