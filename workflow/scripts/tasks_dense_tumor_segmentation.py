from brainssl.jobs import job_context
from brainssl.tasks.segmentation import tumor_segmentation_task

with job_context(snakemake) as job:
    outputs = {k: v for k, v in snakemake.output.items() if k != "prov"}
    settings, encoders = job.params["settings"], snakemake.params.encoders
    frame = tumor_segmentation_task(snakemake.input.table, encoders, settings, job.seed, outputs)
    job.extra.update(rows=len(frame), skipped=int((frame["status"] == "skipped").sum()))
