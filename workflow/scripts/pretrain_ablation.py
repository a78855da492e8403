from pathlib import Path

from brainssl.jobs import job_context
from brainssl.pretrain.ablation import ablation_from_index
from brainssl.pretrain.distributed import job_processes
from brainssl.pretrain.metrics import redraw_curves

# As pretrain_ssl.py: a preempted run fails the job and the retry resumes from its checkpoint.
with job_context(snakemake) as job:
    inp, out = snakemake.input, snakemake.output
    summary = ablation_from_index(
        inp.filtered,
        inp.unfiltered,
        Path(out.encoder).parent,
        {**snakemake.params.settings, "seed": job.seed},
        snakemake.params.probe,
        snakemake.params.variant,
        nprocs=job_processes(snakemake.resources),
    )
    job.extra.update({k: summary[k] for k in ("knn", "final_loss", "pool", "epoch_images", "slices_seen")})
    job.extra.update(steps=summary["step"])
    redraw_curves(Path(out.curves).parent, inp.random_card)
