from threadpoolctl import threadpool_limits

from brainssl.jobs import job_context
from brainssl.tasks.representation import RepresentationSettings, analyse_representations
from brainssl.tasks.results import write_results

with job_context(snakemake) as job, threadpool_limits(limits=job.threads):
    params = snakemake.params
    slices = dict(zip(params.encoders, snakemake.input.slices, strict=True))
    settings = RepresentationSettings.from_dict(params.settings)
    rows = analyse_representations(slices, settings, params.bootstrap, job.seed, snakemake.output.maps)
    job.extra.update(rows=len(write_results(rows, snakemake.output.results)))
