from pathlib import Path

from brainssl.jobs import job_context
from brainssl.slices import SliceSettings, read_index, save_slice_figures

with job_context(snakemake):
    save_slice_figures(
        read_index(snakemake.input.stats),
        SliceSettings.from_dict(snakemake.params.settings),
        Path(snakemake.output.entropy).parent,
    )
