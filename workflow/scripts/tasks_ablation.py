from brainssl.jobs import job_context
from brainssl.tasks.ablation import write_ablation

with job_context(snakemake) as job:
    inp, out = snakemake.input, snakemake.output
    variants = snakemake.params.variants
    table = write_ablation(
        inp.results,
        inp.comparisons,
        dict(zip(variants, inp.cards, strict=True)),
        dict(zip(variants, inp.provs, strict=True)),
        inp.filtered,
        inp.unfiltered,
        out.table,
        out.figure,
    )
    job.extra.update(rows=len(table))
