from threadpoolctl import threadpool_limits

from brainssl.embed import EmbedSettings, embed_index
from brainssl.jobs import job_context

with job_context(snakemake) as job, threadpool_limits(limits=job.threads):
    counts = embed_index(
        snakemake.input.index,
        snakemake.params.spec,
        snakemake.output.slices,
        snakemake.output.subjects,
        EmbedSettings.from_dict(snakemake.params.settings),
    )
    job.extra.update(counts)
