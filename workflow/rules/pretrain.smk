# Pretrain: MoCo v3 and DINO encoders learnt without labels from the merged slice store, plus the
# random-initialised baseline exported the same way. Outputs: results/pretrain/{method}-{arch}/.
# Not yet included in the Snakefile (draft; needs the `pretrain:` schema section and common.smk's
# wildcard constraints for {arch}).
#
# Preemption: SIGTERM/SIGUSR1 make the loop write checkpoints/last.pt and the adapter exit
# non-zero, so `retries:` resubmits the job and the retry resumes from the checkpoint (the
# checkpoint folder is not a declared output, so Snakemake leaves it in place).

PRETRAIN_ARCHS = ["vit_tiny", "vit_small", "vit_base", "resnet18", "resnet50"]
# keys of `pretrain:` that are not PretrainSettings values
PRETRAIN_META = ("archs", "methods", "moco", "dino", "per_arch", "probe", "resources")


def _sorted(value):
    """Sort mapping keys recursively, so that reordering a config file triggers no rerun."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


def pretrain_settings(method, arch):
    """The PretrainSettings mapping of one run: shared keys, the method's section, then per_arch."""
    section = config["pretrain"]
    shared = {k: v for k, v in section.items() if k not in PRETRAIN_META}
    own = section.get("per_arch", {}).get(arch, {}).get(method, {})
    merged = {**shared, **section[method], **own, "method": method, "arch": arch}
    return _sorted(merged)


def pretrain_resources(key):
    return config["pretrain"]["resources"][key]


def pretrain_outputs(run):
    folder = f"results/pretrain/{run}-{{arch}}"
    return {
        "encoder": f"{folder}/encoder.safetensors",
        "card": f"{folder}/model_card.json",
        "metrics": f"{folder}/metrics.jsonl",
        "curves": f"{folder}/curves.png",
        "prov": f"{folder}/provenance.json",
    }


rule pretrain_moco:
    input:
        index="results/slices/index.parquet",
    output:
        **pretrain_outputs("moco"),
    log:
        "logs/pretrain/moco-{arch}.log",
    benchmark:
        "logs/pretrain/moco-{arch}.timing.tsv"
    wildcard_constraints:
        arch="|".join(PRETRAIN_ARCHS),
    retries: pretrain_resources("retries")
    conda:
        "../../envs/train.yaml"
    threads: pretrain_resources("threads")
    resources:
        **(
            {"gpu_model": pretrain_resources("gpu_model")}
            if pretrain_resources("gpu_model")
            else {}
        ),
        mem_mb=pretrain_resources("mem_mb"),
        runtime=pretrain_resources("runtime"),
        # snakemake-executor-plugin-slurm turns `gpu` (+ optional `gpu_model`) into
        # --gpus=[model:]N; 0 requests none (CPU run).
        gpu=pretrain_resources("gpus"),
    params:
        settings=lambda wc: pretrain_settings("moco", wc.arch),
        probe=_sorted(config["pretrain"]["probe"]),
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
        settings=lambda wc: pretrain_settings("dino", wc.arch),
        probe=_sorted(config["pretrain"]["probe"]),
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
        # the baseline's weights depend only on arch, img_size and seed
        settings=lambda wc: {
            "arch": wc.arch,
            "img_size": config["pretrain"]["img_size"],
            "device": "cpu",
        },
        probe=_sorted(config["pretrain"]["probe"]),
        seed=config["seed"],
    script:
        "../scripts/pretrain_random.py"


rule pretrain_all:
    input:
        expand(
            "results/pretrain/{method}-{arch}/encoder.safetensors",
            method=config["pretrain"]["methods"] + ["random"],
            arch=config["pretrain"]["archs"],
        ),
