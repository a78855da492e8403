from pathlib import Path

from brainssl.jobs import job_context
from brainssl.pretrain import pretrain_from_index
from brainssl.pretrain.distributed import job_processes
from brainssl.pretrain.metrics import redraw_curves

# A preempted run raises PreemptedError: the job fails, Snakemake's `retries:` resubmits it,
# and the retry resumes from checkpoints/last.pt in the same folder.
with job_context(snakemake) as job:
    summary = pretrain_from_index(
        snakemake.input.index,
        Path(snakemake.output.encoder).parent,
        {**snakemake.params.settings, "seed": job.seed},
        snakemake.params.probe,
        nprocs=job_processes(snakemake.resources),  # a resource: changing it re-runs nothing
    )
    job.extra.update(knn=summary["knn"], final_loss=summary["final_loss"], steps=summary["step"])
    # the loop draws curves.png while it trains; the finished figure adds the random encoder's kNN
    redraw_curves(Path(snakemake.output.curves).parent, snakemake.input.get("random_card"))
