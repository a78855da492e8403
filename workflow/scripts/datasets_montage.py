from pathlib import Path

import pandas as pd

from brainssl.datasets import save_montage
from brainssl.jobs import job_context

with job_context(snakemake):
    manifest = pd.read_csv(snakemake.input.manifest, sep="\t")
    save_montage(
        snakemake.wildcards.dataset, manifest, Path(snakemake.output.png), n_subjects=snakemake.params.subjects
    )
