from pathlib import Path

from brainssl.jobs import job_context
from brainssl.pretrain.export import write_export

with job_context(snakemake) as job:
    card = write_export(
        Path(snakemake.input.encoder).parent,
        Path(snakemake.output.encoder).parent,
        snakemake.input.index,
        snakemake.params.release,
        name=snakemake.wildcards.run,
        landmarks=snakemake.params.landmarks,
    )
    data = card["training_data"]
    job.extra.update(
        subjects=data["subjects"], slices=data["slices"], synthetic=data["synthetic"], license=card["license"]
    )
