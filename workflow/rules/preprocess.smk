# Preprocessing: one job per shard of `preprocess.shard_size` subjects of a dataset.
# The shard lists come from the dataset's manifest (checkpoint datasets_manifest), but a shard
# job's inputs are only its own subjects' files and its params only its own rows, so adding a
# subject re-runs the shard it lands in (the last one) and the dataset aggregates, nothing else.


# Nyúl landmarks: fitted on QC-passing training subjects (wiring.nyul_candidates).
rule preprocess_landmarks:
    input:
        images=lambda wc: shard_files(preprocess_training_rows(wc)),
    output:
        landmarks="results/preprocess/{dataset}/nyul_landmarks.json",
        prov="results/preprocess/{dataset}/nyul_landmarks.provenance.json",
    log:
        "logs/preprocess/{dataset}/landmarks.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: config["preprocess"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        settings=lambda wc: wiring.preprocess_settings(config, wc.dataset),
        rows=lambda wc: shard_records(preprocess_training_rows(wc)),
        fit_subjects=config["preprocess"]["nyul_fit_subjects"],
        seed=config["seed"],
    script:
        "../scripts/preprocess_landmarks.py"


rule preprocess_shard:
    input:
        unpack(preprocess_shard_inputs),
    output:
        table="results/preprocess/{dataset}/shards/shard-{shard}.tsv",
        failures="results/preprocess/{dataset}/shards/shard-{shard}.failures.tsv",
        prov="results/preprocess/{dataset}/shards/shard-{shard}.provenance.json",
    log:
        "logs/preprocess/{dataset}/shard-{shard}.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: config["preprocess"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        settings=lambda wc: wiring.preprocess_settings(config, wc.dataset),
        rows=lambda wc: shard_records(preprocess_shard_rows(wc)),
        seed=config["seed"],
        out_dir=lambda wc: f"results/preprocess/{wc.dataset}/sessions",
    script:
        "../scripts/preprocess_shard.py"


rule preprocess_merge:
    input:
        tables=lambda wc: preprocess_shard_tables(wc, "tsv"),
        failures=lambda wc: preprocess_shard_tables(wc, "failures.tsv"),
        manifest="results/datasets/{dataset}/manifest.tsv",
    output:
        table="results/preprocess/{dataset}/table.tsv",
        failures="results/preprocess/{dataset}/failures.tsv",
        qc=report(
            "results/preprocess/{dataset}/qc.tsv",
            caption="../report/preprocess_qc_table.rst",
            category="2. Preprocessing",
            labels={"dataset": "{dataset}", "figure": "QC table"},
        ),
        png=report(
            "results/preprocess/{dataset}/qc_summary.png",
            caption="../report/preprocess_qc_summary.rst",
            category="2. Preprocessing",
            labels={"dataset": "{dataset}", "figure": "QC summary"},
        ),
        prov="results/preprocess/{dataset}/table.provenance.json",
    log:
        "logs/preprocess/{dataset}/merge.log",
    conda:
        "../../envs/preprocess.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        exclude_flagged=config["preprocess"]["exclude_flagged"],
        split=stage_params(config, "datasets", keys=["split"])["split"],
        seed=config["seed"],
    script:
        "../scripts/preprocess_merge.py"


rule preprocess_all:
    input:
        expand(
            "results/preprocess/{dataset}/{name}",
            dataset=PREPROCESS_ENABLED,
            name=["table.tsv", "qc.tsv", "qc_summary.png"],
        ),
