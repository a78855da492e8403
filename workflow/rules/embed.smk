# Embed: one job per encoder (pretrained, random-initialised, user-named, and the classical
# histogram/shape baseline) embeds every slice of the merged store and pools per unit.
# Outputs: results/embed/{encoder}/{slices,subjects}.parquet. EMBED_ENCODERS and the input
# functions live in common.smk (the encoder list comes from brainssl.wiring).


rule embed_encoder:
    input:
        index="results/slices/index.parquet",
        weights=embed_weights,
    output:
        slices="results/embed/{encoder}/slices.parquet",
        subjects="results/embed/{encoder}/subjects.parquet",
        prov="results/embed/{encoder}/provenance.json",
    log:
        "logs/embed/{encoder}.log",
    benchmark:
        "logs/embed/{encoder}.timing.tsv"
    priority: 1  # right after its encoder: every frozen-feature task waits on all of them
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    # one GPU where embed.device is cuda (none for the classical baseline)
    resources:
        **wiring.embed_gpu_resources(config),
        mem_mb=4000,
        runtime=60,
    params:
        settings=stage_params(
            config,
            "embed",
            keys=["batch_size", "device", "pool_window", "histogram_bins"],
        ),
        spec=lambda wc: EMBED_ENCODERS[wc.encoder],
    script:
        "../scripts/embed_encoder.py"


rule embed_all:
    input:
        embed_files("slices"),
        embed_files("subjects"),
