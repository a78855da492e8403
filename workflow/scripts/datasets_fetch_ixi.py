from pathlib import Path

from brainssl.datasets import fetch_ixi
from brainssl.jobs import job_context

with job_context(snakemake) as job:
    root = fetch_ixi(
        Path(snakemake.params.dest),
        contrasts=tuple(snakemake.params.contrasts),
        base_url=snakemake.params.base_url,
    )
    job.extra["root"] = str(root)
