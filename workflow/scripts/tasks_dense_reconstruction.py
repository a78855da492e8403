from brainssl.jobs import job_context
from brainssl.tasks.dense_settings import ReconstructionSettings
from brainssl.tasks.reconstruction import reconstruction_task

with job_context(snakemake) as job:
    settings = ReconstructionSettings.from_dict(job.params["settings"])
    outputs = {k: v for k, v in snakemake.output.items() if k != "prov"}
    frame = reconstruction_task(
        snakemake.input.table,
        snakemake.input.manifest,
        snakemake.params.encoders,
        settings,
        job.seed,
        outputs,
        device=snakemake.params.device,
    )
    job.extra.update(rows=len(frame), skipped=int((frame["status"] == "skipped").sum()))
