from brainssl.io import write_table
from brainssl.jobs import job_context
from brainssl.slices import plan_shards, read_input_table

with job_context(snakemake) as job:
    table = read_input_table(snakemake.input.table)
    size = snakemake.params.settings["shard_size"]
    plan = plan_shards(table, size, snakemake.params.split, job.seed)
    write_table(snakemake.output.plan, plan)
    job.extra.update(subjects=len(plan), shards=int(plan["shard"].max()) + 1 if len(plan) else 0)
