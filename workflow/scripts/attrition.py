from brainssl.attrition import count_attrition
from brainssl.io import write_table
from brainssl.jobs import job_context

with job_context(snakemake) as job:
    params = snakemake.params
    result = count_attrition(params.datasets, params.preprocessed, params.sliced)
    write_table(snakemake.output.summary, result.summary)
    write_table(snakemake.output.losses, result.losses)
    lost = result.summary.dropna(subset=["lost"])
    job.extra.update(lost={f"{r.dataset}/{r.stage}": int(r.lost) for r in lost.itertuples() if r.lost})
