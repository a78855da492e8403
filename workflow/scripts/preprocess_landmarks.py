import pandas as pd

from brainssl.jobs import job_context
from brainssl.preprocess import PreprocessSettings
from brainssl.preprocess.cohort import fit_landmarks, save_landmarks

with job_context(snakemake) as job:
    values = {**snakemake.params.settings, "threads": job.threads, "seed": job.seed}
    settings = PreprocessSettings.from_dict(values)
    landmarks = fit_landmarks(pd.DataFrame(snakemake.params.rows), settings)
    save_landmarks(snakemake.output.landmarks, landmarks)
    job.extra.update(modalities=sorted(landmarks), n_train={m: lm.n_train for m, lm in landmarks.items()})
