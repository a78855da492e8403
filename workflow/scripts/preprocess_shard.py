import pandas as pd

from brainssl.io import write_table
from brainssl.jobs import job_context
from brainssl.preprocess import PreprocessSettings, preprocess_shard
from brainssl.preprocess.cohort import load_landmarks

with job_context(snakemake) as job:
    values = {**snakemake.params.settings, "threads": job.threads, "seed": job.seed}
    settings = PreprocessSettings.from_dict(values)
    landmarks = load_landmarks(snakemake.input.landmarks) if "landmarks" in snakemake.input.keys() else None
    rows = pd.DataFrame(snakemake.params.rows)
    table, failures = preprocess_shard(rows, snakemake.params.out_dir, settings, landmarks=landmarks)
    write_table(snakemake.output.table, table)
    write_table(snakemake.output.failures, failures)
    job.extra.update(sessions=int(rows.groupby(["subject", "session"]).ngroups), failures=len(failures))
