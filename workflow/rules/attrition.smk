# Subjects lost per dataset and stage (brainssl.attrition), for the report. The same counts are
# printed at the end of every run, successful or not (the Snakefile's onsuccess/onerror).


rule attrition:
    input:
        datasets=expand(
            "results/datasets/{dataset}/{name}",
            dataset=ENABLED_DATASETS,
            name=["manifest.tsv", "failures.tsv"],
        ),
        preprocess=expand(
            "results/preprocess/{dataset}/{name}",
            dataset=PREPROCESS_ENABLED,
            name=["table.tsv", "failures.tsv", "qc.tsv"],
        ),
        slices=expand("results/slices/{dataset}/stats.parquet", dataset=SLICE_DATASETS),
    output:
        summary=report(
            "results/attrition.tsv",
            caption="../report/attrition.rst",
            category="7. Subjects lost",
            labels={"table": "per dataset and stage"},
        ),
        losses=report(
            "results/attrition_losses.tsv",
            caption="../report/attrition_losses.rst",
            category="7. Subjects lost",
            labels={"table": "per subject, session or file"},
        ),
        prov="results/attrition.provenance.json",
    log:
        "logs/attrition.log",
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        datasets=ENABLED_DATASETS,
        preprocessed=PREPROCESS_ENABLED,
        sliced=SLICE_DATASETS,
    script:
        "../scripts/attrition.py"
