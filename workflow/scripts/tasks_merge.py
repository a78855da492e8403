from brainssl.jobs import job_context
from brainssl.tasks.results import merge_comparisons, merge_results

with job_context(snakemake) as job:
    table = merge_results(snakemake.input.results, snakemake.output.results)
    merge_comparisons(snakemake.input.comparisons, snakemake.output.comparisons)
    job.extra.update(rows=len(table), skipped=int((table["status"] == "skipped").sum()))
