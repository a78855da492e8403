# Slices: axial slices cut from preprocessed volumes (and the 2D tumour image set), filtered by
# entropy and position, stored per dataset in shards of subjects (memory-mappable .npy + Parquet
# index). A checkpoint plans each dataset's shards from its table, so changing one dataset
# rebuilds only that dataset's shards. The shard input function
# (slices_shard_files) lives in common.smk, SLICE_DATASETS comes from brainssl.wiring.


checkpoint slices_plan:
    input:
        table=lambda wc: wiring.slices_table(wc.dataset),
    output:
        plan="results/slices/{dataset}/plan.tsv",
        prov="results/slices/{dataset}/plan.provenance.json",
    log:
        "logs/slices/{dataset}/plan.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=lambda wc: stage_params(
            config, "slices", wc.dataset, keys=["shard_size"]
        ),
        split=stage_params(config, "datasets", keys=["split"])["split"],
        seed=config["seed"],
    script:
        "../scripts/slices_plan.py"


rule slices_shard:
    input:
        table=lambda wc: wiring.slices_table(wc.dataset),
        plan="results/slices/{dataset}/plan.tsv",
        manifest="results/datasets/{dataset}/manifest.tsv",
    output:
        array="results/slices/{dataset}/shard-{shard}.npy",
        labels="results/slices/{dataset}/shard-{shard}.labels.npy",
        index="results/slices/{dataset}/shard-{shard}.index.parquet",
        stats="results/slices/{dataset}/shard-{shard}.stats.parquet",
        prov="results/slices/{dataset}/shard-{shard}.provenance.json",
    log:
        "logs/slices/{dataset}/shard-{shard}.log",
    benchmark:
        "logs/slices/{dataset}/shard-{shard}.timing.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=lambda wc: stage_params(
            config,
            "slices",
            wc.dataset,
            keys=[
                "size",
                "dtype",
                "intensity_percentiles",
                "entropy_bins",
                "entropy_region",
                "entropy_mode",
                "entropy_threshold",
                "entropy_percentile",
                "position_window",
                "step_mm",
                "min_area",
            ],
        ),
    script:
        "../scripts/slices_shard.py"


rule slices_merge_dataset:
    input:
        index=slices_shard_files("index.parquet"),
        stats=slices_shard_files("stats.parquet"),
        arrays=slices_shard_files("npy"),
        labels=slices_shard_files("labels.npy"),
    output:
        index="results/slices/{dataset}/index.parquet",
        stats="results/slices/{dataset}/stats.parquet",
        prov="results/slices/{dataset}/index.provenance.json",
    log:
        "logs/slices/{dataset}/merge.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/slices_merge.py"


rule slices_figures:
    input:
        stats="results/slices/{dataset}/stats.parquet",
    output:
        entropy=report(
            "results/slices/{dataset}/entropy.png",
            caption="../report/slices_entropy.rst",
            category="3. Slices",
            labels={"dataset": "{dataset}", "figure": "entropy"},
        ),
        retained=report(
            "results/slices/{dataset}/retained.png",
            caption="../report/slices_retained.rst",
            category="3. Slices",
            labels={"dataset": "{dataset}", "figure": "retained"},
        ),
        table="results/slices/{dataset}/retained.tsv",
        montage=report(
            "results/slices/{dataset}/montage.png",
            caption="../report/slices_montage.rst",
            category="3. Slices",
            labels={"dataset": "{dataset}", "figure": "montage"},
        ),
    log:
        "logs/slices/{dataset}/figures.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=lambda wc: stage_params(
            config,
            "slices",
            wc.dataset,
            keys=[
                "size",
                "dtype",
                "intensity_percentiles",
                "entropy_bins",
                "entropy_region",
                "entropy_mode",
                "entropy_threshold",
                "entropy_percentile",
                "position_window",
                "step_mm",
                "min_area",
                "montage_slices",
            ],
        ),
    script:
        "../scripts/slices_figures.py"


rule slices_merge:
    input:
        index=expand("results/slices/{dataset}/index.parquet", dataset=SLICE_DATASETS),
        stats=expand("results/slices/{dataset}/stats.parquet", dataset=SLICE_DATASETS),
    output:
        index="results/slices/index.parquet",
        stats="results/slices/stats.parquet",
        prov="results/slices/index.provenance.json",
    log:
        "logs/slices/merge.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/slices_merge.py"


rule slices_retained:
    input:
        stats="results/slices/stats.parquet",
    output:
        png=report(
            "results/slices/retained.png",
            caption="../report/slices_retained.rst",
            category="3. Slices",
            labels={"dataset": "all", "figure": "retained"},
        ),
        table=report(
            "results/slices/retained.tsv",
            caption="../report/slices_retained.rst",
            category="3. Slices",
            labels={"dataset": "all", "figure": "retained table"},
        ),
    log:
        "logs/slices/retained.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/slices_retained.py"


rule slices_all:
    input:
        "results/slices/index.parquet",
        "results/slices/retained.png",
        expand(
            "results/slices/{dataset}/{figure}.png",
            dataset=SLICE_DATASETS,
            figure=["entropy", "retained", "montage"],
        ),
