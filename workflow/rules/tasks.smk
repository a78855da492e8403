# Frozen-feature tasks: light heads on pooled embeddings of every encoder, one job per task
# (encoders, label fractions, seeds and subject-level folds loop inside), the representation
# analysis of slice embeddings, and the merge of every task's results.tsv (dense tasks
# included, via TASK_RESULTS) into results/tasks/results.tsv. Input functions in common.smk.


rule tasks_tumor4:
    input:
        **scratch_inputs("tumor4"),
        subjects=embed_files("subjects"),
    output:
        results="results/tasks/tumor4/results.tsv",
        comparisons="results/tasks/tumor4/comparisons.tsv",
        curves=report(
            "results/tasks/tumor4/curves.png",
            caption="../report/tasks_curves.rst",
            category="Tasks",
            labels={"task": "tumor4", "figure": "label-fraction curves"},
        ),
        prov="results/tasks/tumor4/provenance.json",
    log:
        "logs/tasks/tumor4.log",
    benchmark:
        "logs/tasks/tumor4.timing.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        **task_params("tumor4"),
        task="tumor4",
        encoders=list(EMBED_ENCODERS),
        seed=config["seed"],
        scratch=scratch_params("tumor4"),
    script:
        "../scripts/tasks_frozen.py"


use rule tasks_tumor4 as tasks_sequence with:
    input:
        **scratch_inputs("sequence"),
        subjects=embed_files("subjects"),
    output:
        results="results/tasks/sequence/results.tsv",
        comparisons="results/tasks/sequence/comparisons.tsv",
        curves=report(
            "results/tasks/sequence/curves.png",
            caption="../report/tasks_curves.rst",
            category="Tasks",
            labels={"task": "sequence", "figure": "label-fraction curves"},
        ),
        prov="results/tasks/sequence/provenance.json",
    log:
        "logs/tasks/sequence.log",
    benchmark:
        "logs/tasks/sequence.timing.tsv"
    params:
        **task_params("sequence"),
        task="sequence",
        encoders=list(EMBED_ENCODERS),
        seed=config["seed"],
        scratch=scratch_params("sequence"),


use rule tasks_tumor4 as tasks_neurodegeneration with:
    input:
        **scratch_inputs("neurodegeneration"),
        subjects=embed_files("subjects"),
    output:
        results="results/tasks/neurodegeneration/results.tsv",
        comparisons="results/tasks/neurodegeneration/comparisons.tsv",
        curves=report(
            "results/tasks/neurodegeneration/curves.png",
            caption="../report/tasks_curves.rst",
            category="Tasks",
            labels={"task": "neurodegeneration", "figure": "label-fraction curves"},
        ),
        prov="results/tasks/neurodegeneration/provenance.json",
    log:
        "logs/tasks/neurodegeneration.log",
    benchmark:
        "logs/tasks/neurodegeneration.timing.tsv"
    params:
        **task_params("neurodegeneration"),
        task="neurodegeneration",
        encoders=list(EMBED_ENCODERS),
        seed=config["seed"],
        scratch=scratch_params("neurodegeneration"),


use rule tasks_tumor4 as tasks_molecular with:
    input:
        **scratch_inputs("molecular"),
        subjects=embed_files("subjects"),
    output:
        results="results/tasks/molecular/results.tsv",
        comparisons="results/tasks/molecular/comparisons.tsv",
        curves=report(
            "results/tasks/molecular/curves.png",
            caption="../report/tasks_curves.rst",
            category="Tasks",
            labels={"task": "molecular", "figure": "label-fraction curves"},
        ),
        prov="results/tasks/molecular/provenance.json",
    log:
        "logs/tasks/molecular.log",
    benchmark:
        "logs/tasks/molecular.timing.tsv"
    params:
        **task_params("molecular"),
        task="molecular",
        encoders=list(EMBED_ENCODERS),
        seed=config["seed"],
        scratch=scratch_params("molecular"),


use rule tasks_tumor4 as tasks_brain_age with:
    input:
        **scratch_inputs("brain_age"),
        subjects=embed_files("subjects"),
    output:
        results="results/tasks/brain_age/results.tsv",
        comparisons="results/tasks/brain_age/comparisons.tsv",
        curves=report(
            "results/tasks/brain_age/curves.png",
            caption="../report/tasks_curves.rst",
            category="Tasks",
            labels={"task": "brain_age", "figure": "label-fraction curves"},
        ),
        prov="results/tasks/brain_age/provenance.json",
    log:
        "logs/tasks/brain_age.log",
    benchmark:
        "logs/tasks/brain_age.timing.tsv"
    params:
        **task_params("brain_age"),
        task="brain_age",
        encoders=list(EMBED_ENCODERS),
        seed=config["seed"],
        scratch=scratch_params("brain_age"),


rule tasks_survival:
    input:
        subjects=embed_files("subjects"),
        manifests=expand(
            "results/datasets/{dataset}/manifest.tsv",
            dataset=config["tasks"]["survival"]["datasets"],
        ),
    output:
        results="results/tasks/survival/results.tsv",
        comparisons="results/tasks/survival/comparisons.tsv",
        curves=report(
            "results/tasks/survival/curves.png",
            caption="../report/tasks_curves.rst",
            category="Tasks",
            labels={"task": "survival", "figure": "label-fraction curves"},
        ),
        risk_groups=report(
            "results/tasks/survival/risk_groups.png",
            caption="../report/tasks_risk_groups.rst",
            category="Tasks",
            labels={"task": "survival", "figure": "Kaplan-Meier risk groups"},
        ),
        prov="results/tasks/survival/provenance.json",
    log:
        "logs/tasks/survival.log",
    benchmark:
        "logs/tasks/survival.timing.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        **task_params("survival"),
        task="survival",
        encoders=list(EMBED_ENCODERS),
        seed=config["seed"],
    script:
        "../scripts/tasks_frozen.py"


rule tasks_representation:
    input:
        slices=embed_files("slices"),
    output:
        results="results/tasks/representation/results.tsv",
        maps=report(
            "results/tasks/representation/maps.png",
            caption="../report/tasks_representation.rst",
            category="Representations",
            labels={"figure": "PCA and t-SNE maps of slice embeddings"},
        ),
        prov="results/tasks/representation/provenance.json",
    log:
        "logs/tasks/representation.log",
    benchmark:
        "logs/tasks/representation.timing.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        encoders=list(EMBED_ENCODERS),
        settings=stage_params(config, "tasks", keys=["representation"])[
            "representation"
        ],
        bootstrap=config["tasks"]["bootstrap"],
        seed=config["seed"],
    script:
        "../scripts/tasks_representation.py"


rule tasks_merge:
    input:
        results=expand("results/tasks/{task}/results.tsv", task=TASK_RESULTS),
        comparisons=expand("results/tasks/{task}/comparisons.tsv", task=FROZEN_TASKS),
    output:
        results=report(
            "results/tasks/results.tsv",
            caption="../report/tasks_results.rst",
            category="Tasks",
            labels={"figure": "results table of every task"},
        ),
        comparisons="results/tasks/comparisons.tsv",
        prov="results/tasks/results.provenance.json",
    log:
        "logs/tasks/merge.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/tasks_merge.py"


rule tasks_all:
    input:
        "results/tasks/results.tsv",
        "results/tasks/comparisons.tsv",
