from pathlib import Path

from brainssl.datasets import generate_demo_shard
from brainssl.io import write_table
from brainssl.jobs import job_context

with job_context(snakemake) as job:
    table = generate_demo_shard(
        snakemake.wildcards.dataset,
        Path(snakemake.params.raw_root),
        subject_indices=snakemake.params.subjects,
        seed=job.seed,
        grid_mm=snakemake.params.grid_mm,
        demo=snakemake.params.demo,
    )
    write_table(snakemake.output.table, table)
    job.extra["subjects"] = len(table)
