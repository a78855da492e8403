from threadpoolctl import threadpool_limits

from brainssl.datasets import merge_manifests, read_manifest
from brainssl.jobs import job_context
from brainssl.tasks.frozen import TaskRun, run_task
from brainssl.tasks.outputs import write_task_outputs
from brainssl.tasks.scratch import ScratchBaseline
from brainssl.tasks.sites import site_baseline_rows

with job_context(snakemake) as job, threadpool_limits(limits=job.threads):
    inp, out, params = snakemake.input, snakemake.output, snakemake.params
    run = TaskRun.from_params(params.task, params.shared, params.settings, job.seed)
    survival = None
    if "manifests" in inp.keys():
        manifest = merge_manifests([read_manifest(path) for path in inp.manifests])
        survival = manifest[["subject", "survival_days", "event"]]
    baseline, scratch = None, params.get("scratch")
    if scratch:
        encoders = dict(zip(scratch["encoders"], inp.scratch_encoders, strict=True))
        settings, window = scratch["settings"], scratch["pool_window"]
        baseline = ScratchBaseline.from_files(
            inp.index, encoders, settings, run.evaluation, window, device=scratch["device"]
        )
    outcome = run_task(run, dict(zip(params.encoders, inp.subjects, strict=True)), survival, baseline)
    outcome.rows += site_baseline_rows(run, outcome)  # site-aware specs: the site-only head
    table = write_task_outputs(outcome, out.results, out.comparisons, out.curves, out.get("risk_groups"))
    job.extra.update(rows=len(table), skipped=int((table["status"] == "skipped").sum()))
