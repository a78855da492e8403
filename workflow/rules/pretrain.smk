# Pretrain: MoCo v3 and DINO encoders learnt without labels from the train split of the merged
# slice store, and the random-initialised baseline exported the same way.
# Outputs: results/pretrain/{method}-{arch}/ (its export/ folder is the standard export: weights,
# model_card.json, README.md, config.json), results/pretrain/{name}/ of each natural-image baseline
# and results/pretrain/probe.tsv.
#
# Preemption: SIGTERM/SIGUSR1 make the loop write checkpoints/last.pt and the job fail, so
# `retries:` resubmits it and the retry resumes from the checkpoint (the checkpoints folder is
# not a declared output, so Snakemake leaves it in place; a checkpoint from other settings or
# data is discarded, never resumed).


rule pretrain_moco:
    input:
        index="results/slices/index.parquet",
        # its kNN probe is the reference line of the curves' kNN panel (ancient: a new random
        # card redraws nothing and retrains nothing)
        random_card=ancient("results/pretrain/random-{arch}/model_card.json"),
    output:
        **pretrain_outputs("moco"),
    log:
        "logs/pretrain/moco-{arch}.log",
    benchmark:
        "logs/pretrain/moco-{arch}.timing.tsv"
    wildcard_constraints:
        arch="|".join(PRETRAIN_ARCHS),
    # Trainings first: every later job waits on an encoder, and the dense tasks fill the cores
    # left over (in a 2-core demo with the ablation on, its second run waited behind three dense
    # tasks and every frozen-feature task behind it).
    priority: 1
    retries: PRETRAIN_RESOURCES["retries"]
    conda:
        "../../envs/train.yaml"
    threads: PRETRAIN_RESOURCES["threads"]
    # `gpu` (and `gpu_model`): snakemake-executor-plugin-slurm requests --gpus=[model:]N (one
    # task: the script launches one process per GPU, brainssl.pretrain.distributed); locally the
    # job claims that many GPUs (brainssl.gpus). The process count is read at job time from the
    # resources: one per GPU, or `--set-resources pretrain_moco:processes=2` (two gloo processes
    # on the CPU). Resources are no rerun trigger: gpus, threads or memory re-run nothing.
    resources:
        **wiring.pretrain_gpu_resources(config),
        mem_mb=PRETRAIN_RESOURCES["mem_mb"],
        runtime=PRETRAIN_RESOURCES["runtime"],
    params:
        settings=pretrain_settings("moco"),
        probe=wiring.pretrain_probe(config),
        seed=config["seed"],
    script:
        "../scripts/pretrain_ssl.py"


use rule pretrain_moco as pretrain_dino with:
    output:
        **pretrain_outputs("dino"),
    log:
        "logs/pretrain/dino-{arch}.log",
    benchmark:
        "logs/pretrain/dino-{arch}.timing.tsv"
    params:
        settings=pretrain_settings("dino"),
        probe=wiring.pretrain_probe(config),
        seed=config["seed"],


rule pretrain_random:
    input:
        index="results/slices/index.parquet",
    output:
        encoder="results/pretrain/random-{arch}/encoder.safetensors",
        card="results/pretrain/random-{arch}/model_card.json",
        prov="results/pretrain/random-{arch}/provenance.json",
    log:
        "logs/pretrain/random-{arch}.log",
    wildcard_constraints:
        arch="|".join(PRETRAIN_ARCHS),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        settings=pretrain_settings("random"),
        probe=wiring.pretrain_probe(config),
        seed=config["seed"],
    script:
        "../scripts/pretrain_random.py"


# Natural-image baselines (pretrain.natural): an ImageNet-style checkpoint (timm, torchvision, DINO,
# DINOv2) becomes a brainssl export like the random one; `weights: synthetic` writes a random-init
# checkpoint in the entry's real layout to source/ and reads it back through the same adapter.
rule pretrain_natural:
    input:
        index="results/slices/index.parquet",
        weights=lambda wc: wiring.natural_weights(config, wc.name),
    output:
        encoder="results/pretrain/{name}/encoder.safetensors",
        card="results/pretrain/{name}/model_card.json",
        prov="results/pretrain/{name}/provenance.json",
    log:
        "logs/pretrain/{name}.log",
    benchmark:
        "logs/pretrain/{name}.timing.tsv"
    wildcard_constraints:
        name=wiring.task_pattern(wiring.natural_names(config)),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        natural=lambda wc: wiring.natural_params(config, wc.name),
        probe=wiring.pretrain_probe(config),
        seed=config["seed"],
    script:
        "../scripts/pretrain_natural.py"


rule pretrain_probe_table:
    input:
        cards=[
            Path(path).with_name("model_card.json")
            for path in {**ENCODERS, **wiring.ablation_encoders(config)}.values()
        ],
    output:
        table=report(
            "results/pretrain/probe.tsv",
            caption="../report/pretrain_probe.rst",
            category="4. Pretraining",
            labels={"figure": "kNN probe of every encoder"},
        ),
        prov="results/pretrain/probe.provenance.json",
    log:
        "logs/pretrain/probe_table.log",
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/pretrain_probe_table.py"


# The standard export of every encoder: its weights beside the complete model card (the recipe
# as numbers, training data, licence, intended use, limitations), a Hugging Face-style README.md
# and config.json. A separate, cheap job: its params (recipe settings, embed pool window) re-run
# this copy, never the training.
from brainssl import modelcard  # noqa: E402

EXPORT_LANDMARKS = modelcard.landmark_files(config)


rule pretrain_export:
    input:
        encoder="results/pretrain/{run}/encoder.safetensors",
        card="results/pretrain/{run}/model_card.json",
        index="results/slices/index.parquet",
        landmarks=list(EXPORT_LANDMARKS.values()),
    output:
        encoder="results/pretrain/{run}/export/encoder.safetensors",
        card="results/pretrain/{run}/export/model_card.json",
        readme="results/pretrain/{run}/export/README.md",
        config="results/pretrain/{run}/export/config.json",
        prov="results/pretrain/{run}/export/provenance.json",
    log:
        "logs/pretrain/{run}.export.log",
    wildcard_constraints:
        run="|".join(re.escape(run) for run in wiring.pretrain_runs(config)),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        release=modelcard.release_params(config),
        landmarks=EXPORT_LANDMARKS,
        seed=config["seed"],
    script:
        "../scripts/pretrain_export.py"


rule pretrain_all:
    input:
        list(ENCODERS.values()),
        "results/pretrain/probe.tsv",
        expand(
            "results/pretrain/{run}/export/{name}",
            run=wiring.pretrain_runs(config),
            name=["README.md", "config.json"],
        ),
