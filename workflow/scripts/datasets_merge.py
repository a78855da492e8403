import pandas as pd

from brainssl.datasets import merge_manifests
from brainssl.io import write_table
from brainssl.jobs import job_context

with job_context(snakemake) as job:
    merged = merge_manifests([pd.read_csv(p, sep="\t") for p in snakemake.input])
    write_table(snakemake.output.manifest, merged)
    job.extra["rows"] = len(merged)
