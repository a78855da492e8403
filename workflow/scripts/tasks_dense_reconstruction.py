from brainssl.jobs import job_context
from brainssl.tasks.reconstruction import reconstruction_task

with job_context(snakemake) as job:
    outputs = {k: v for k, v in snakemake.output.items() if k != "prov"}
    frame = reconstruction_task(
        snakemake.input.table,
        snakemake.input.manifest,
        snakemake.params.encoders,
        job.params["settings"],
        job.seed,
        outputs,
    )
    job.extra.update(rows=len(frame), skipped=int((frame["status"] == "skipped").sum()))
