# bpflow: bias-factorized BPNet models of base-resolution genomics data.
#
#   snakemake --cores 2                              # the embedded demo (config/config.yaml)
#   snakemake --cores 2 --configfile my.yaml         # your experiments (config/README.md)
#   snakemake --profile profiles/slurm --configfile my.yaml
#
# Per experiment: [simulate] -> regions -> datasets -> train_bias -> fit_transformation
# -> train_combined [-> predict -> metrics, footprints, report figures].  Every step writes
# its JSON config under results/{experiment}/configs/ and runs `bpflow <step> that.json`
# (footprints and report figures: the adapters in scripts/).  Report of a finished run:
#   snakemake --report results/report.html

import os

from snakemake.utils import min_version

min_version("9.0")


# The embedded demo, unless a config was given (`--configfile` files would otherwise be
# merged into the demo's experiments instead of replacing them).
if not workflow.config_settings.configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
