from brainssl.jobs import job_context
from brainssl.tasks.dense_settings import HippocampusSegmentationSettings
from brainssl.tasks.dense_slices import slice_recipes
from brainssl.tasks.segmentation import hippocampus_segmentation_task

with job_context(snakemake) as job:
    settings = HippocampusSegmentationSettings.from_dict(job.params["settings"])
    tables = dict(zip(snakemake.params.datasets, snakemake.input.tables, strict=True))
    manifests = dict(zip(snakemake.params.datasets, snakemake.input.manifests, strict=True))
    stores = dict(zip(snakemake.params.slice_stores, snakemake.input.slice_indexes, strict=True))
    percentiles = slice_recipes(stores, snakemake.params.slice_settings)
    outputs = {k: v for k, v in snakemake.output.items() if k != "prov"}
    frame = hippocampus_segmentation_task(
        tables,
        manifests,
        snakemake.params.encoders,
        settings,
        job.seed,
        outputs,
        percentiles=percentiles,
        device=snakemake.params.device,
    )
    job.extra.update(rows=len(frame), skipped=int((frame["status"] == "skipped").sum()))
