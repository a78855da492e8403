from brainssl.datasets import merge_manifests, read_manifest
from brainssl.datasets.manifest import subject_ids
from brainssl.io import write_table
from brainssl.jobs import job_context

with job_context(snakemake) as job:
    merged = merge_manifests([read_manifest(p) for p in snakemake.input])
    write_table(snakemake.output.manifest, merged)
    write_table(snakemake.output.ids, subject_ids(merged))
    job.extra["rows"] = len(merged)
