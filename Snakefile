# brainssl: self-supervised brain MRI foundation encoders.
#
# Results layout (one folder per stage):
#   results/datasets/<dataset>/{raw/,shards/,manifest.tsv,failures.tsv,montage.png}
#   results/datasets/manifest.tsv           merged manifest of all datasets
#   results/preprocess/<dataset>/{sessions/,shards/,table.tsv,failures.tsv,qc.tsv,qc_summary.png}
#   results/slices/{<dataset>/,index.parquet,stats.parquet,retained.png}
#   results/pretrain/<method>-<arch>/{encoder.safetensors,model_card.json,metrics.csv,curves.png}
#   results/embed/<encoder>/{slices,subjects}.parquet   slice embeddings and per-unit means
#   results/tasks/<task>/{results.tsv,comparisons.tsv,*.png}, results/tasks/results.tsv (all tasks)
# Logs mirror results under logs/.

# The default config: config.yaml in the working directory when there is one (a deployed copy),
# else the workflow's own, so `-d <folder>` needs no --configfile. Files given with --configfile
# override it key by key.
import os


configfile: "config.yaml" if os.path.exists("config.yaml") else f"{workflow.basedir}/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/slices.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/tasks.smk"
include: "workflow/rules/tasks_dense.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/attrition.smk"


from brainssl.attrition import attrition_message  # noqa: E402


# Every run ends with the subjects each dataset lost at each stage and where the tables are.
onsuccess:
    print(wiring.final_output_message(config))
    print(attrition_message(ENABLED_DATASETS, PREPROCESS_ENABLED, SLICE_DATASETS))


onerror:
    print(attrition_message(ENABLED_DATASETS, PREPROCESS_ENABLED, SLICE_DATASETS))


rule all:
    default_target: True
    input:
        wiring.final_outputs(config),
        "results/attrition.tsv",
