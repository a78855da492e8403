import pandas as pd

from brainssl.jobs import job_context
from brainssl.preprocess import PreprocessSettings
from brainssl.preprocess.cohort import fit_cohort_landmarks, save_landmarks

with job_context(snakemake) as job:
    values = {**snakemake.params.settings, "threads": job.threads, "seed": job.seed}
    settings = PreprocessSettings.from_dict(values)
    # candidates in subject order; the first fit_subjects per contrast that pass QC are used
    rows = pd.DataFrame(snakemake.params.rows)
    fit = fit_cohort_landmarks(rows, settings, snakemake.params.fit_subjects)
    save_landmarks(snakemake.output.landmarks, fit.landmarks)
    # which subjects each contrast was fitted on, and every session skipped with the reason
    job.extra.update(fit.record(), candidates=int(rows["subject"].nunique()) if len(rows) else 0)
