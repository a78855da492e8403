from brainssl.jobs import job_context
from brainssl.pretrain.export import probe_table

with job_context(snakemake):
    probe_table(snakemake.input.cards, snakemake.output.table)
