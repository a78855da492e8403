from brainssl.jobs import job_context
from brainssl.slices import check_store, merge_slice_index

with job_context(snakemake) as job:
    index = merge_slice_index(list(snakemake.input.index), snakemake.output.index)
    stats = merge_slice_index(list(snakemake.input.stats), snakemake.output.stats)
    job.extra.update(check_store(index), cut=len(stats))
