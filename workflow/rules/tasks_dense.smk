# Dense tasks: light decoders on the feature maps of every encoder (frozen), the same network
# fine-tuned end to end and trained from scratch. One job per task; the label fractions, seeds
# and variants loop inside. Outputs: results/tasks/<task>/{results.tsv, figures}.
# Slices are cut with the slice store's recipe: the intensity percentiles the store's index
# recorded for the dataset, or, for a dataset the store does not hold (the Decathlon
# hippocampus crops), the same effective per-dataset `slices` settings slices_shard gets.
# The names below bind the dense tasks' wiring (brainssl.wiring) to this config.

dense_task_params = partial(wiring.dense_task_params, config)
hippocampus_task_datasets = partial(
    wiring.dense_task_datasets, config, "hippocampus_segmentation"
)
dense_slice_stores = partial(wiring.dense_slice_stores, config)
dense_slice_indexes = partial(wiring.dense_slice_indexes, config)
dense_slice_settings = partial(wiring.dense_slice_settings, config)


rule tasks_tumor_segmentation:
    input:
        table="results/preprocess/brats21/table.tsv",
        encoders=list(ENCODERS.values()),
        slice_indexes=dense_slice_indexes(["brats21"]),
    output:
        results="results/tasks/tumor_segmentation/results.tsv",
        subjects="results/tasks/tumor_segmentation/subjects.tsv",
        overlays=report(
            "results/tasks/tumor_segmentation/overlays.png",
            caption="../report/tasks_tumor_segmentation.rst",
            category="5. Tasks",
            subcategory="tumor_segmentation",
            labels={"task": "tumor segmentation"},
        ),
        prov="results/tasks/tumor_segmentation/provenance.json",
    log:
        "logs/tasks/tumor_segmentation.log",
    benchmark:
        "logs/tasks/tumor_segmentation.timing.tsv"
    conda:
        "../../envs/train.yaml"
    threads: wiring.dense_task_threads(config)
    # one GPU where tasks.device is cuda (brainssl.wiring.task_gpu_resources)
    resources:
        **wiring.task_gpu_resources(config),
        mem_mb=4000,
        runtime=60,
    params:
        settings=dense_task_params("tumor_segmentation"),
        encoders=ENCODERS,
        slice_stores=dense_slice_stores(["brats21"]),
        slice_settings=dense_slice_settings(["brats21"]),
        seed=config["seed"],
        device=wiring.task_device(config),
    script:
        "../scripts/tasks_dense_tumor_segmentation.py"


rule tasks_hippocampus_segmentation:
    input:
        tables=expand(
            "results/preprocess/{dataset}/table.tsv",
            dataset=hippocampus_task_datasets(),
        ),
        manifests=expand(
            "results/datasets/{dataset}/manifest.tsv",
            dataset=hippocampus_task_datasets(),
        ),
        encoders=list(ENCODERS.values()),
        slice_indexes=dense_slice_indexes(hippocampus_task_datasets()),
    output:
        results="results/tasks/hippocampus_segmentation/results.tsv",
        subjects="results/tasks/hippocampus_segmentation/subjects.tsv",
        overlays=report(
            "results/tasks/hippocampus_segmentation/overlays.png",
            caption="../report/tasks_hippocampus_segmentation.rst",
            category="5. Tasks",
            subcategory="hippocampus_segmentation",
            labels={"task": "hippocampus segmentation"},
        ),
        prov="results/tasks/hippocampus_segmentation/provenance.json",
    log:
        "logs/tasks/hippocampus_segmentation.log",
    benchmark:
        "logs/tasks/hippocampus_segmentation.timing.tsv"
    conda:
        "../../envs/train.yaml"
    threads: wiring.dense_task_threads(config)
    # one GPU where tasks.device is cuda (brainssl.wiring.task_gpu_resources)
    resources:
        **wiring.task_gpu_resources(config),
        mem_mb=4000,
        runtime=60,
    params:
        settings=dense_task_params("hippocampus_segmentation"),
        datasets=hippocampus_task_datasets(),
        encoders=ENCODERS,
        slice_stores=dense_slice_stores(hippocampus_task_datasets()),
        slice_settings=dense_slice_settings(hippocampus_task_datasets()),
        seed=config["seed"],
        device=wiring.task_device(config),
    script:
        "../scripts/tasks_dense_hippocampus_segmentation.py"


rule tasks_tumor_detection:
    input:
        table="results/preprocess/brats21/table.tsv",
        encoders=list(ENCODERS.values()),
        slice_indexes=dense_slice_indexes(["brats21"]),
    output:
        results="results/tasks/tumor_detection/results.tsv",
        overlays=report(
            "results/tasks/tumor_detection/overlays.png",
            caption="../report/tasks_tumor_detection.rst",
            category="5. Tasks",
            subcategory="tumor_detection",
            labels={"task": "tumor detection"},
        ),
        prov="results/tasks/tumor_detection/provenance.json",
    log:
        "logs/tasks/tumor_detection.log",
    benchmark:
        "logs/tasks/tumor_detection.timing.tsv"
    conda:
        "../../envs/train.yaml"
    threads: wiring.dense_task_threads(config)
    # one GPU where tasks.device is cuda (brainssl.wiring.task_gpu_resources)
    resources:
        **wiring.task_gpu_resources(config),
        mem_mb=4000,
        runtime=60,
    params:
        settings=dense_task_params("tumor_detection"),
        encoders=ENCODERS,
        slice_stores=dense_slice_stores(["brats21"]),
        slice_settings=dense_slice_settings(["brats21"]),
        seed=config["seed"],
        device=wiring.task_device(config),
    script:
        "../scripts/tasks_dense_tumor_detection.py"


rule tasks_reconstruction:
    input:
        table="results/preprocess/fastmri_brain/table.tsv",
        manifest="results/datasets/fastmri_brain/manifest.tsv",
        encoders=list(ENCODERS.values()),
    output:
        results="results/tasks/reconstruction/results.tsv",
        volumes="results/tasks/reconstruction/volumes.tsv",
        overlays=report(
            "results/tasks/reconstruction/overlays.png",
            caption="../report/tasks_reconstruction.rst",
            category="5. Tasks",
            subcategory="reconstruction",
            labels={"task": "reconstruction"},
        ),
        prov="results/tasks/reconstruction/provenance.json",
    log:
        "logs/tasks/reconstruction.log",
    benchmark:
        "logs/tasks/reconstruction.timing.tsv"
    conda:
        "../../envs/train.yaml"
    threads: wiring.dense_task_threads(config)
    # one GPU where tasks.device is cuda (brainssl.wiring.task_gpu_resources)
    resources:
        **wiring.task_gpu_resources(config),
        mem_mb=4000,
        runtime=60,
    params:
        settings=dense_task_params("reconstruction"),
        encoders=ENCODERS,
        seed=config["seed"],
        device=wiring.task_device(config),
    script:
        "../scripts/tasks_dense_reconstruction.py"


rule tasks_dense_all:
    input:
        expand("results/tasks/{task}/results.tsv", task=DENSE_TASKS),
