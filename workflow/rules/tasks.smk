# Frozen-feature tasks: light heads on pooled embeddings of every encoder, one job per task of
# the registry (brainssl.tasks.registry; encoders, label fractions and shots, seeds and
# subject-level folds loop inside), the representation analysis of slice embeddings, and the
# merge of every task's results.tsv (dense tasks included, via TASK_RESULTS) into
# results/tasks/results.tsv, with the conclusions and the few-shot figures.
# Input and params functions in common.smk, task lists from brainssl.wiring.


rule tasks_frozen:
    input:
        unpack(frozen_task_inputs),
    output:
        **frozen_task_outputs(),
    log:
        "logs/tasks/{task}.log",
    benchmark:
        "logs/tasks/{task}.timing.tsv"
    wildcard_constraints:
        task=wiring.task_pattern(wiring.plain_frozen_tasks()),
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    # one GPU where tasks.device is cuda, for the jobs that train scratch networks
    resources:
        **wiring.frozen_task_gpu_resources(config),
        mem_mb=4000,
        runtime=30,
    params:
        shared=frozen_task_param("shared"),
        settings=frozen_task_param("settings"),
        task="{task}",
        encoders=list(EMBED_ENCODERS),
        seed=config["seed"],
        scratch=lambda wildcards: wiring.scratch_params(config, wildcards.task),
    script:
        "../scripts/tasks_frozen.py"


# Survival-analysis tasks (registry figures: risk_groups): the Kaplan-Meier figure besides the
# frozen outputs, and no scratch baseline (so no `scratch` param: Snakemake compares params).
rule tasks_survival:
    input:
        unpack(frozen_task_inputs),
    output:
        **frozen_task_outputs(figures=["risk_groups"]),
    log:
        "logs/tasks/{task}.log",
    benchmark:
        "logs/tasks/{task}.timing.tsv"
    wildcard_constraints:
        task=wiring.task_pattern(wiring.risk_group_tasks()),
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        shared=frozen_task_param("shared"),
        settings=frozen_task_param("settings"),
        task="{task}",
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
            category="6. Representations",
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


# The report's tasks section opens with the few-shot curves of every frozen-feature task, the
# conclusions (which encoder beats which, where) and the merged table; the merge writes them.
TASKS_SUMMARY = "1. Few-shot curves, conclusions, all results"


rule tasks_merge:
    input:
        results=expand("results/tasks/{task}/results.tsv", task=TASK_RESULTS),
        comparisons=expand("results/tasks/{task}/comparisons.tsv", task=FROZEN_TASKS),
    output:
        results=report(
            "results/tasks/results.tsv",
            caption="../report/tasks_results.rst",
            category="5. Tasks",
            subcategory=TASKS_SUMMARY,
            labels={"task": "all", "figure": "results table of every task"},
        ),
        comparisons="results/tasks/comparisons.tsv",
        conclusions=report(
            "results/tasks/conclusions.tsv",
            caption="../report/tasks_conclusions.rst",
            category="5. Tasks",
            subcategory=TASKS_SUMMARY,
            labels={"task": "all", "figure": "conclusions: who beats whom (table)"},
        ),
        conclusions_figure=report(
            "results/tasks/conclusions.png",
            caption="../report/tasks_conclusions_figure.rst",
            category="5. Tasks",
            subcategory=TASKS_SUMMARY,
            labels={"task": "all", "figure": "conclusions: who beats whom, where"},
        ),
        claims="results/tasks/claims.md",
        fewshot=[
            report(
                f"results/tasks/{task}/fewshot.png",
                caption="../report/tasks_fewshot.rst",
                category="5. Tasks",
                subcategory=TASKS_SUMMARY,
                labels={"task": task, "figure": "few-shot curves"},
            )
            for task in FROZEN_TASKS
        ],
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
