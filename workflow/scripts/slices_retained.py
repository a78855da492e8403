from brainssl.io import write_table
from brainssl.jobs import job_context
from brainssl.slices import read_index, retention_table, save_retention_figure

with job_context(snakemake):
    stats = read_index(snakemake.input.stats)
    save_retention_figure(stats, snakemake.output.png)
    write_table(snakemake.output.table, retention_table(stats))
