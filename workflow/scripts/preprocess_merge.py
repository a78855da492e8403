from brainssl.datasets import read_manifest
from brainssl.io import write_table
from brainssl.jobs import job_context
from brainssl.preprocess.cohort import merge_shards, plot_qc_summary, read_shard_table

with job_context(snakemake) as job:
    table, failures, qc = merge_shards(
        [read_shard_table(p) for p in snakemake.input.tables],
        [read_shard_table(p) for p in snakemake.input.failures],
        read_manifest(snakemake.input.manifest),
        exclude_flagged=snakemake.params.exclude_flagged,
        seed=snakemake.params.seed,
        fractions=snakemake.params.split,
    )
    for name, frame in (("table", table), ("failures", failures), ("qc", qc)):
        write_table(snakemake.output[name], frame)
    plot_qc_summary(qc, snakemake.output.png, title=snakemake.wildcards.dataset)
    job.extra.update(volumes=len(table), failures=len(failures), sessions=len(qc))
    job.extra["flagged"] = int(qc["flagged"].sum())
