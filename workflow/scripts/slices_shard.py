from brainssl.jobs import job_context
from brainssl.slices import SliceSettings, build_slice_shard, load_shard_rows

with job_context(snakemake) as job:
    shard = int(snakemake.wildcards.shard)
    inp, out = snakemake.input, snakemake.output
    rows = load_shard_rows(inp.table, inp.plan, shard, inp.manifest)
    settings = SliceSettings.from_dict(snakemake.params.settings)
    index = build_slice_shard(rows, settings, shard, out.array, out.labels, out.index, out.stats)
    job.extra.update(volumes=len(rows), kept=len(index))
