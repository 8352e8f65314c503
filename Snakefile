# bpflow: bias-factorized BPNet models of base-resolution genomics data.
#
#   snakemake --cores 2                              # the embedded demo (config/config.yaml)
#   snakemake --cores 2 --configfile my.yaml         # your experiments (config/README.md)
#   snakemake --profile profiles/slurm --configfile my.yaml
#
# Per experiment: [simulate] -> regions -> datasets -> train_bias -> train_transformation
# -> train_combined -> qc_combined [-> predict -> metrics, footprints, report figures]
# [-> contributions -> motifs (interpret.enabled)].
# Every step's JSON config is written under results/{experiment}/configs/ and the step runs
# as `bpflow <step> that.json --threads N --verbosity LEVEL`.  Report of a finished run:
#   snakemake --report results/report.html
# docs/architecture.md draws the layout and the data flow.

import os

from snakemake.utils import min_version

min_version("9.0")


# The embedded demo, unless a config was given (`--configfile` files would otherwise be
# merged into the demo's experiments instead of replacing them).
if not workflow.config_settings.configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/configs/simulate.smk"
include: "workflow/rules/configs/data.smk"
include: "workflow/rules/configs/train.smk"
include: "workflow/rules/configs/evaluate.smk"
include: "workflow/rules/configs/report.smk"
include: "workflow/rules/configs/interpret.smk"
include: "workflow/rules/step_configs.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/interpret.smk"


onsuccess:
    print_qc_summary()


onerror:
    print_qc_summary()


rule all:
    default_target: True
    input:
        final_outputs(),
