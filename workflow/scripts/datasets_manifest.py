from pathlib import Path

from brainssl.datasets import build_manifest
from brainssl.io import write_table
from brainssl.jobs import job_context

with job_context(snakemake) as job:
    manifest, failures = build_manifest(snakemake.wildcards.dataset, Path(snakemake.params.raw_root))
    write_table(snakemake.output.manifest, manifest)
    write_table(snakemake.output.failures, failures)
    job.extra.update(rows=len(manifest), subjects=int(manifest["subject"].nunique()), failures=len(failures))
