from pathlib import Path

from brainssl.datasets import finalize_demo
from brainssl.jobs import job_context

with job_context(snakemake) as job:
    tables = finalize_demo(
        snakemake.wildcards.dataset,
        Path(snakemake.params.raw_root),
        [Path(p) for p in snakemake.input.tables],
        demo=snakemake.params.demo,
    )
    job.extra["tables"] = [str(p) for p in tables]
