from pathlib import Path

from brainssl.datasets import build_manifest
from brainssl.io import write_table
from brainssl.jobs import job_context

with job_context(snakemake) as job:
    # Snakemake deletes a failed job's outputs: when no subject is usable, the failures table
    # goes beside the job's log, which is kept, and the error names it.
    kept = Path(snakemake.log[0]).with_name("failures.tsv") if len(snakemake.log) else None
    manifest, failures = build_manifest(
        snakemake.wildcards.dataset,
        Path(snakemake.params.raw_root),
        require_usable=True,
        failures_path=kept,
        entry=snakemake.params.entry,
    )
    write_table(snakemake.output.manifest, manifest)
    write_table(snakemake.output.failures, failures)
    if kept is not None:
        kept.unlink(missing_ok=True)  # left by an earlier run that had no usable subject
    job.extra.update(rows=len(manifest), subjects=int(manifest["subject"].nunique()), failures=len(failures))
