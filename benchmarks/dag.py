"""Dry-run seconds and job count of the workflow DAG at 10,000 and 100,000 subjects.

Run as ``.venv/bin/python benchmarks/dag.py``. Every dataset is ``source: local`` and its
ingest has finished: a temporary working directory holds empty stand-in image files in place of
the real ones and, for each dataset, the manifest, failures table and provenance that
``datasets_manifest`` would have written (plus the merged manifest and montages). The subjects
are spread evenly over the six datasets; each has the files its native layout has (IXI three
contrasts, BraTS four and a label map, OASIS-3 two in one session, ...).

The manifests (``checkpoint datasets_manifest``) and the slice plans (``checkpoint slices_plan``)
are checkpoints, and a dry-run stops at a checkpoint that is still to run. So the whole DAG is
measured in two dry-runs, as a user at that scale would see them:

- ``ingested``: what is left after the ingest (preprocessing shards, merges, the slice plans);
- ``preprocessed``: the same folder after preprocessing (shard tables, merged tables, Nyul
  landmarks and slice plans also written, each tier newer than the one before), which lists
  the slice shards and everything after them; this DAG still walks every preprocessing job.

Each rule's jobs appear in one of the two tables (``all`` in both), so the pipeline's job count
is the per-rule maximum over the two. The config is ``config.yaml`` overlaid with
``config/scale.yaml`` (the shard sizes for this scale) and the datasets file written here.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import update_config

from brainssl.config import stage_params
from brainssl.datasets import DATASETS
from brainssl.datasets.manifest import check_manifest, failures_frame, make_row, pseudonymize, rows_to_frame
from brainssl.io import write_json, write_table
from brainssl.preprocess.shards import PREPROCESS_DATASETS, shard_count, volume_rows
from brainssl.slices import plan_shards
from brainssl.splits import subject_split

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SCALE_CONFIG = REPO / "config/scale.yaml"
JOBS_GOAL = 5_000
SECONDS_GOAL = 30.0
# (format, file extension, session, contrasts, has a label map) per dataset, as the native layouts have.
LAYOUT_FILES = {
    "ixi": ("nifti", "nii.gz", "", ("T1w", "T2w", "PD"), False),
    "brats21": ("nifti", "nii.gz", "", ("T1w", "T1ce", "T2w", "FLAIR"), True),
    "fastmri_brain": ("fastmri_h5", "h5", "", ("T2w",), False),
    "oasis3": ("nifti", "nii.gz", "ses-d0000", ("T1w", "T2w"), False),
    "tumor4": ("jpg", "jpg", "", ("",), False),
    "hippocampus": ("nifti", "nii.gz", "", ("T1w",), True),
}
# The slice stage takes every preprocessed dataset but the hippocampus crops, plus the 2D images.
SLICE_DATASETS = [d for d in DATASETS if d in PREPROCESS_DATASETS and d != "hippocampus"] + ["tumor4"]


def stand_in_manifest(dataset: str, n_subjects: int, raw: Path) -> pd.DataFrame:
    """Write ``n_subjects`` subjects' empty stand-in files under ``raw`` and return their manifest."""
    fmt, ext, session, contrasts, has_label = LAYOUT_FILES[dataset]
    raw.mkdir(parents=True, exist_ok=True)
    template = make_row(dataset, "template", format=fmt, session=session, shape="1x1x1")
    rows = []
    for i in range(n_subjects):
        native_id = f"{dataset}_{i:06d}"
        seg = str(raw / f"{native_id}_seg.{ext}") if has_label else ""
        subject_rows = [
            dict(
                template,
                subject=pseudonymize(dataset, native_id),
                native_id=native_id,
                contrast=contrast,
                path=str(raw / f"{native_id}_{contrast or 'image'}.{ext}"),
                seg_path=seg,
            )
            for contrast in contrasts
        ]
        rows += subject_rows
        _touch([row["path"] for row in subject_rows] + ([seg] if seg else []))
    manifest = rows_to_frame(rows)
    check_manifest(manifest)
    return manifest


def write_ingest(workdir: Path, n_subjects: int) -> dict[str, pd.DataFrame]:
    """Write what a finished ingest of ``n_subjects`` local subjects leaves; return the manifests."""
    share, rest = divmod(n_subjects, len(DATASETS))
    per_dataset = {d: share + (i < rest) for i, d in enumerate(DATASETS)}
    manifests = {d: stand_in_manifest(d, n, workdir / "raw" / d) for d, n in per_dataset.items()}
    datasets = {d: {"source": "local", "path": str(workdir / "raw" / d)} for d in DATASETS}
    # config.yaml's user-named BIDS demos (kind: bids entries) are no part of the stand-in cohort
    demo = yaml.safe_load((REPO / "config.yaml").read_text())["datasets"]
    off = [name for name, entry in demo.items() if isinstance(entry, dict) and entry.get("kind") == "bids"]
    datasets.update({name: {"enabled": False} for name in off})
    (workdir / "datasets.yaml").write_text(yaml.safe_dump({"datasets": datasets}))
    # The Snakefile's `configfile: "config.yaml"` is read from the working directory.
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    tier = []
    for dataset, manifest in manifests.items():
        folder = workdir / "results/datasets" / dataset
        write_table(folder / "manifest.tsv", manifest)
        write_table(folder / "failures.tsv", failures_frame([]))
        write_json(folder / "manifest.provenance.json", {"stage": "datasets", "stand_in": True})
        _touch([folder / "montage.png"])
        tier += [folder / name for name in ("manifest.tsv", "failures.tsv", "manifest.provenance.json")]
        tier.append(folder / "montage.png")
    write_table(workdir / "results/datasets/manifest.tsv", pd.concat(manifests.values(), ignore_index=True))
    write_json(workdir / "results/datasets/manifest.provenance.json", {"stage": "datasets", "stand_in": True})
    tier += [workdir / "results/datasets/manifest.tsv", workdir / "results/datasets/manifest.provenance.json"]
    _age(tier, 1)
    return manifests


def write_preprocessed(workdir: Path, manifests: dict[str, pd.DataFrame], config: dict) -> None:
    """Add what preprocessing and the slice plans would have written (stand-ins, newer per tier)."""
    shard_tier, merged_tier, plan_tier = [], [], []
    fractions, seed = config["datasets"]["split"], config["seed"]
    tables = {"tumor4": manifests["tumor4"]}
    for dataset in PREPROCESS_DATASETS:
        folder = workdir / "results/preprocess" / dataset
        rows = volume_rows(manifests[dataset])
        settings = stage_params(config, "preprocess", dataset, ["normalisation"])
        if settings["normalisation"]["method"] == "nyul":
            shard_tier += [folder / "nyul_landmarks.json", folder / "nyul_landmarks.provenance.json"]
        for shard in range(shard_count(rows, config["preprocess"]["shard_size"])):
            kinds = ("tsv", "failures.tsv", "provenance.json")
            shard_tier += [folder / f"shards/shard-{shard}.{kind}" for kind in kinds]
        splits = {s: subject_split(s, seed, fractions, "") for s in rows["subject"].unique()}
        tables[dataset] = rows.assign(split=rows["subject"].map(splits))
        write_table(folder / "table.tsv", tables[dataset])
        names = ("table.tsv", "failures.tsv", "qc.tsv", "qc_summary.png", "table.provenance.json")
        merged_tier += [folder / name for name in names]
    for dataset in SLICE_DATASETS:
        folder = workdir / "results/slices" / dataset
        shard_size = stage_params(config, "slices", dataset, ["shard_size"])["shard_size"]
        write_table(folder / "plan.tsv", plan_shards(tables[dataset], shard_size, fractions, seed))
        plan_tier += [folder / "plan.tsv", folder / "plan.provenance.json"]
    for rank, tier in enumerate((shard_tier, merged_tier, plan_tier), start=2):
        _touch(tier)
        _age(tier, rank)


def merged_config(workdir: Path, *extra_configs: Path) -> dict:
    """The config the workflow sees: config.yaml, config/scale.yaml, the datasets file, then any extra."""
    config: dict = {}
    for path in (workdir / "config.yaml", SCALE_CONFIG, workdir / "datasets.yaml", *extra_configs):
        update_config(config, yaml.safe_load(path.read_text()))
    return config


def dry_run(workdir: Path, *extra_configs: Path) -> tuple[float, float, dict[str, int]]:
    """Run ``snakemake --dry-run`` in ``workdir``; return wall seconds, CPU seconds and jobs per rule.

    CPU seconds (user + system of the child) do not grow when other processes share the machine.
    """
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--dry-run"]
    cmd += ["--configfile", str(SCALE_CONFIG), str(workdir / "datasets.yaml"), *map(str, extra_configs)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if result.returncode != 0:
        raise RuntimeError(f"dry-run failed:\n{(result.stdout + result.stderr)[-4000:]}")
    return seconds, cpu, job_counts(result.stdout)


def job_counts(stdout: str) -> dict[str, int]:
    """Parse the ``Job stats`` table of a dry-run (rule -> jobs, without the total)."""
    counts = {}
    table = stdout.split("Job stats:", 1)[1] if "Job stats:" in stdout else ""
    for line in table.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def _touch(paths: Iterable[Path | str]) -> None:
    for path in paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass


def _age(paths: Iterable[Path], rank: int) -> None:
    """Give a tier of outputs one mtime, ``rank`` seconds after now, so each tier is newer than its inputs."""
    stamp = time.time() + rank
    for path in paths:
        os.utime(path, (stamp, stamp))


def measure(n_subjects: int, repeats: int) -> list[dict]:
    """Build the cohort, dry-run both states ``repeats`` times; one record per state (medians)."""
    records = []
    with tempfile.TemporaryDirectory(prefix="brainssl-dag-") as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        manifests = write_ingest(workdir, n_subjects)
        build_s = time.perf_counter() - start
        for state in ("ingested", "preprocessed"):
            if state == "preprocessed":
                start = time.perf_counter()
                write_preprocessed(workdir, manifests, merged_config(workdir))
                build_s = time.perf_counter() - start
            runs = [dry_run(workdir) for _ in range(repeats)]
            records.append(
                dict(
                    subjects=n_subjects,
                    state=state,
                    seconds=statistics.median(run[0] for run in runs),
                    cpu_s=statistics.median(run[1] for run in runs),
                    jobs=runs[0][2],
                    build_s=build_s,
                )
            )
    return records


def pipeline_jobs(records: list[dict]) -> dict[str, int]:
    """Jobs per rule over both dry-runs of a cohort (each rule is listed in one of them, ``all`` in both)."""
    jobs: dict[str, int] = {}
    for record in records:
        for rule, n in record["jobs"].items():
            jobs[rule] = max(jobs.get(rule, 0), n)
    return jobs


def main() -> None:
    """Measure the baseline and each cohort size, print the table against the goals, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--baseline", type=int, default=60, help="subjects of the start-up baseline cohort")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="results/benchmarks/dag.json")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cores {cores}  device cpu  snakemake --dry-run  config/scale.yaml  repeats {args.repeats}")
    baseline = measure(args.baseline, args.repeats)
    base_s = max(r["seconds"] for r in baseline)
    summary = []
    for n_subjects in [args.baseline, *args.subjects]:
        records = baseline if n_subjects == args.baseline else measure(n_subjects, args.repeats)
        for record in records:
            print(
                f"{n_subjects:>7,} subjects  {record['state']:<12}  jobs {sum(record['jobs'].values()):>5,}  "
                f"dry-run {record['seconds']:5.1f} s wall {record['cpu_s']:5.1f} s CPU  "
                f"{record['seconds'] / base_s:4.1f}x baseline  "
                f"{record['seconds'] / SECONDS_GOAL:.2f}x of goal {SECONDS_GOAL:.0f} s  "
                f"(stand-ins {record['build_s']:.0f} s)"
            )
        jobs = pipeline_jobs(records)
        total = sum(jobs.values())
        largest = sorted(jobs.items(), key=lambda kv: -kv[1])[:3]
        print(
            f"{n_subjects:>7,} subjects  pipeline      jobs {total:>5,}  ({total / JOBS_GOAL:.2f}x of goal "
            f"{JOBS_GOAL:,}; largest: {', '.join(f'{rule} {n:,}' for rule, n in largest)})"
        )
        summary.append(dict(subjects=n_subjects, jobs=jobs, total_jobs=total, runs=records))
    goals = {"jobs_goal": JOBS_GOAL, "seconds_goal": SECONDS_GOAL}
    write_json(args.out, {"cores": cores, **goals, "cohorts": summary})


if __name__ == "__main__":
    main()
