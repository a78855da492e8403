# Slice-filter ablation (`pretrain.ablation`, brainssl.ablation): the first seed's method claim is
# that pretraining on entropy- and position-filtered slices helps. One method and arch train at
# equal steps and settings on the filtered store (the ordinary run), on every brain slice (an
# unfiltered store cut from the same plans with those two filters off) and on a seeded random
# subset of those the size of the filtered store; their encoders are embedded, probed and
# evaluated on the frozen-feature tasks like any other (brainssl.wiring.ablation), and
# tasks_ablation tabulates and plots the three against slices seen and training time.
# Outputs: results/slices/unfiltered/, results/pretrain/<method>-<arch>-<variant>/,
# results/tasks/ablation.{tsv,png}. While the ablation is off no target asks for any of them.
from brainssl.ablation import unfiltered_overrides  # noqa: E402

ABLATION_METHOD, ABLATION_ARCH = wiring.ablation_run(config)
ABLATION_VARIANTS = wiring.ablation_variants(config)
# variant -> model card: filtered, the variants, random
ABLATION_CARDS = wiring.ablation_cards(config)
# the unfiltered store: every planned shard of every slice dataset
UNFILTERED_ARGS = dict(root=wiring.UNFILTERED_ROOT, datasets=SLICE_DATASETS)


use rule slices_shard as slices_unfiltered_shard with:
    output:
        array=f"{wiring.UNFILTERED_ROOT}/{{dataset}}/shard-{{shard}}.npy",
        labels=f"{wiring.UNFILTERED_ROOT}/{{dataset}}/shard-{{shard}}.labels.npy",
        index=f"{wiring.UNFILTERED_ROOT}/{{dataset}}/shard-{{shard}}.index.parquet",
        stats=f"{wiring.UNFILTERED_ROOT}/{{dataset}}/shard-{{shard}}.stats.parquet",
        prov=f"{wiring.UNFILTERED_ROOT}/{{dataset}}/shard-{{shard}}.provenance.json",
    log:
        "logs/slices/unfiltered/{dataset}/shard-{shard}.log",
    benchmark:
        "logs/slices/unfiltered/{dataset}/shard-{shard}.timing.tsv"
    params:
        # the filtered shard's own settings with the entropy and position filters off
        settings=lambda wc: unfiltered_overrides(rules.slices_shard.params.settings(wc)),


rule slices_unfiltered_merge:
    input:
        index=slices_shard_files("index.parquet", **UNFILTERED_ARGS),
        stats=slices_shard_files("stats.parquet", **UNFILTERED_ARGS),
        arrays=slices_shard_files("npy", **UNFILTERED_ARGS),
        labels=slices_shard_files("labels.npy", **UNFILTERED_ARGS),
    output:
        index=f"{wiring.UNFILTERED_ROOT}/index.parquet",
        stats=f"{wiring.UNFILTERED_ROOT}/stats.parquet",
        prov=f"{wiring.UNFILTERED_ROOT}/index.provenance.json",
    log:
        "logs/slices/unfiltered/merge.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/slices_merge.py"


rule pretrain_ablation:
    input:
        filtered="results/slices/index.parquet",
        unfiltered=f"{wiring.UNFILTERED_ROOT}/index.parquet",
        random_card=ancient("results/pretrain/random-{arch}/model_card.json"),
    output:
        **pretrain_outputs(ABLATION_METHOD, variant=True),
    log:
        f"logs/pretrain/{ABLATION_METHOD}-{{arch}}-{{variant}}.log",
    benchmark:
        f"logs/pretrain/{ABLATION_METHOD}-{{arch}}-{{variant}}.timing.tsv"
    wildcard_constraints:
        arch=re.escape(ABLATION_ARCH),
        variant=wiring.task_pattern(ABLATION_VARIANTS),
    priority: 1  # as pretrain_moco's: trainings first
    retries: PRETRAIN_RESOURCES["retries"]
    conda:
        "../../envs/train.yaml"
    threads: PRETRAIN_RESOURCES["threads"]
    resources:
        **wiring.pretrain_gpu_resources(config),
        mem_mb=PRETRAIN_RESOURCES["mem_mb"],
        runtime=PRETRAIN_RESOURCES["runtime"],
    params:
        # the filtered run's settings, unchanged: equal settings, equal steps
        settings=pretrain_settings(ABLATION_METHOD),
        probe=wiring.pretrain_probe(config),
        variant="{variant}",
        seed=config["seed"],
    script:
        "../scripts/pretrain_ablation.py"


rule tasks_ablation:
    input:
        results="results/tasks/results.tsv",
        comparisons="results/tasks/comparisons.tsv",
        cards=list(ABLATION_CARDS.values()),
        provs=[
            Path(card).with_name("provenance.json") for card in ABLATION_CARDS.values()
        ],
        filtered="results/slices/index.parquet",
        unfiltered=f"{wiring.UNFILTERED_ROOT}/index.parquet",
    output:
        table=report(
            "results/tasks/ablation.tsv",
            caption="../report/tasks_ablation.rst",
            category="5. Tasks",
            subcategory="2. Slice-filter ablation",
            labels={"task": "ablation", "figure": "slice-filter ablation (table)"},
        ),
        figure=report(
            "results/tasks/ablation.png",
            caption="../report/tasks_ablation_figure.rst",
            category="5. Tasks",
            subcategory="2. Slice-filter ablation",
            labels={
                "task": "ablation",
                "figure": "score against slices seen and training time",
            },
        ),
        prov="results/tasks/ablation.provenance.json",
    log:
        "logs/tasks/ablation.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        variants=list(ABLATION_CARDS),
    script:
        "../scripts/tasks_ablation.py"
