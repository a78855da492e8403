# brainssl: self-supervised brain MRI foundation encoders.
#
# Results layout (one folder per stage):
#   results/datasets/<dataset>/{raw/,chunks/,manifest.tsv,failures.tsv,montage.png}
#   results/datasets/manifest.tsv           merged manifest of all datasets
#   results/preprocess/<dataset>/{sessions/,chunks/,table.tsv,failures.tsv,qc.tsv,qc_summary.png}
# Logs mirror results under logs/.


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/slices.smk"


onsuccess:
    print(final_output_message())


rule all:
    default_target: True
    input:
        final_outputs(),
