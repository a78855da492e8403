rule datasets_generate:
    output:
        table="results/datasets/{dataset}/shards/shard-{shard}.tsv",
        prov="results/datasets/{dataset}/shards/shard-{shard}.provenance.json",
    log:
        "logs/datasets/{dataset}/generate-{shard}.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        subjects=shard_subjects,
        seed=config["seed"],
        grid_mm=config["datasets"]["grid_mm"],
        raw_root=lambda wc: wiring.raw_root(config, wc.dataset),
        demo=lambda wc: wiring.bids_demo(config, wc.dataset),
    script:
        "../scripts/datasets_generate.py"


rule datasets_finalize:
    input:
        tables=lambda wc: expand(
            "results/datasets/{dataset}/shards/shard-{shard}.tsv",
            dataset=wc.dataset,
            shard=wiring.dataset_shards(config, wc.dataset),
        ),
    output:
        prov="results/datasets/{dataset}/raw.done.json",
    log:
        "logs/datasets/{dataset}/finalize.log",
    conda:
        "../../envs/preprocess.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        raw_root=lambda wc: wiring.raw_root(config, wc.dataset),
        demo=lambda wc: wiring.bids_demo(config, wc.dataset),
    script:
        "../scripts/datasets_finalize.py"


rule datasets_fetch_ixi:
    output:
        prov="results/datasets/{dataset}/download.done.json",
    log:
        "logs/datasets/{dataset}/download.log",
    wildcard_constraints:
        dataset="ixi",
    conda:
        "../../envs/preprocess.yaml"
    resources:
        mem_mb=1000,
        runtime=600,
    params:
        dest=lambda wc: config["datasets"][wc.dataset]["path"],
        base_url=lambda wc: config["datasets"][wc.dataset]["base_url"],
        contrasts=lambda wc: config["datasets"][wc.dataset]["contrasts"],
    script:
        "../scripts/datasets_fetch_ixi.py"


checkpoint datasets_manifest:
    input:
        raw_ready,
    output:
        manifest="results/datasets/{dataset}/manifest.tsv",
        failures="results/datasets/{dataset}/failures.tsv",
        prov="results/datasets/{dataset}/manifest.provenance.json",
    log:
        "logs/datasets/{dataset}/manifest.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        raw_root=lambda wc: wiring.raw_root(config, wc.dataset),
        source=lambda wc: config["datasets"][wc.dataset]["source"],
        entry=lambda wc: wiring.bids_entry(config, wc.dataset),
    script:
        "../scripts/datasets_manifest.py"


rule datasets_merge:
    input:
        expand("results/datasets/{dataset}/manifest.tsv", dataset=ENABLED_DATASETS),
    output:
        manifest=report(
            "results/datasets/manifest.tsv",
            caption="../report/datasets_manifest.rst",
            category="1. Datasets",
        ),
        # pseudonymous subject id -> dataset and native id: how to find a subject of any result
        ids="results/datasets/ids.tsv",
        prov="results/datasets/manifest.provenance.json",
    log:
        "logs/datasets/merge.log",
    conda:
        "../../envs/preprocess.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        datasets=ENABLED_DATASETS,
    script:
        "../scripts/datasets_merge.py"


rule datasets_montage:
    input:
        manifest="results/datasets/{dataset}/manifest.tsv",
    output:
        png=report(
            "results/datasets/{dataset}/montage.png",
            caption="../report/datasets_montage.rst",
            category="1. Datasets",
            labels={"dataset": "{dataset}", "figure": "montage"},
        ),
    log:
        "logs/datasets/{dataset}/montage.log",
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        subjects=config["datasets"]["montage_subjects"],
    script:
        "../scripts/datasets_montage.py"


rule datasets_all:
    input:
        "results/datasets/manifest.tsv",
        expand("results/datasets/{dataset}/montage.png", dataset=ENABLED_DATASETS),
