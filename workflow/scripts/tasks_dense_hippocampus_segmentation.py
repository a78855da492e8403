from brainssl.jobs import job_context
from brainssl.tasks.segmentation import hippocampus_segmentation_task

with job_context(snakemake) as job:
    tables = dict(zip(snakemake.params.datasets, snakemake.input.tables, strict=True))
    manifests = dict(zip(snakemake.params.datasets, snakemake.input.manifests, strict=True))
    outputs = {k: v for k, v in snakemake.output.items() if k != "prov"}
    frame = hippocampus_segmentation_task(
        tables, manifests, snakemake.params.encoders, job.params["settings"], job.seed, outputs
    )
    job.extra.update(rows=len(frame), skipped=int((frame["status"] == "skipped").sum()))
