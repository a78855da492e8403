from pathlib import Path

from brainssl.io import write_text
from brainssl.jobs import job_context
from brainssl.tasks.conclusions import claims_markdown, write_conclusions
from brainssl.tasks.figures import save_conclusions_figure, save_fewshot_curves
from brainssl.tasks.results import merge_comparisons, merge_results, read_results

with job_context(snakemake) as job:
    inp, out = snakemake.input, snakemake.output
    table = merge_results(inp.results, out.results)
    comparisons = merge_comparisons(inp.comparisons, out.comparisons)
    conclusions = write_conclusions(comparisons, out.conclusions)
    save_conclusions_figure(conclusions, out.conclusions_figure)
    write_text(out.claims, claims_markdown(conclusions, source=str(out.conclusions)))
    results = {Path(path).parent.name: path for path in inp.results}
    for figure in out.fewshot:  # results/tasks/<task>/fewshot.png
        save_fewshot_curves(read_results(results[Path(figure).parent.name]), figure)
    job.extra.update(rows=len(table), skipped=int((table["status"] == "skipped").sum()))
