from pathlib import Path

from brainssl.datasets import read_manifest, save_montage
from brainssl.jobs import job_context

with job_context(snakemake):
    manifest = read_manifest(snakemake.input.manifest)
    save_montage(
        snakemake.wildcards.dataset,
        manifest,
        Path(snakemake.output.png),
        n_subjects=snakemake.params.subjects,
    )
