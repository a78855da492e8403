from brainssl.jobs import job_context
from brainssl.tasks.dense_settings import TumorDetectionSettings
from brainssl.tasks.dense_slices import slice_recipes
from brainssl.tasks.detection import tumor_detection_task

with job_context(snakemake) as job:
    outputs = {k: v for k, v in snakemake.output.items() if k != "prov"}
    settings = TumorDetectionSettings.from_dict(job.params["settings"])
    encoders = snakemake.params.encoders
    stores = dict(zip(snakemake.params.slice_stores, snakemake.input.slice_indexes, strict=True))
    percentiles = slice_recipes(stores, snakemake.params.slice_settings)["brats21"]
    frame = tumor_detection_task(
        snakemake.input.table,
        encoders,
        settings,
        job.seed,
        outputs,
        percentiles=percentiles,
        device=snakemake.params.device,
    )
    job.extra.update(rows=len(frame), skipped=int((frame["status"] == "skipped").sum()))
