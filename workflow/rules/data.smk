# Region sets per split, then one HDF5 dataset per (dataset, split).  Their configs:
# configs/regions_<regionset>.json (bpflow prepare-regions) and
# configs/data_<dataset>_<split>.json (bpflow prepare-data).


# Peaks split by chromosome and filtered, plus background regions sampled away from them
# (bias-source background or control).
rule regions_sampled:
    input:
        config="results/{experiment}/configs/regions_peaks.json",
        peaks=lambda wc: EXPERIMENTS[wc.experiment]["peaks"],
        files=lambda wc: experiment_inputs(wc.experiment),
    output:
        multiext(
            "results/{experiment}/regions/peaks",
            "_train.bed",
            "_val.bed",
            "_test.bed",
            "_all.bed",
            "_reject.bed",
            "_summary.json",
            "_background_train.bed",
            "_background_val.bed",
            "_background_test.bed",
            "_background_all.bed",
        ),
    log:
        "results/{experiment}/logs/regions_peaks.log",
    wildcard_constraints:
        experiment=SAMPLED,
    conda:
        "../../envs/bpflow.yaml"
    threads: RES["data"]["threads"]
    resources:
        verbosity=config["verbosity"],
        mem_mb=RES["data"]["mem-mb"],
        runtime=RES["data"]["runtime"],
    shell:
        f"bpflow prepare-regions {{input.config}} {RUN_OPTIONS} > {{log}} 2>&1"


# bias-source bed: the peaks without background sampling, and the user's background BED
# split and filtered the same way.
rule regions:
    input:
        config="results/{experiment}/configs/regions_{regionset}.json",
        bed=lambda wc: EXPERIMENTS[wc.experiment]["peaks" if wc.regionset == "peaks" else "background-bed"],
        files=lambda wc: experiment_inputs(wc.experiment),
    output:
        multiext(
            "results/{experiment}/regions/{regionset}",
            "_train.bed",
            "_val.bed",
            "_test.bed",
            "_all.bed",
            "_reject.bed",
            "_summary.json",
        ),
    log:
        "results/{experiment}/logs/regions_{regionset}.log",
    wildcard_constraints:
        experiment=OWN_BED,
    conda:
        "../../envs/bpflow.yaml"
    threads: RES["data"]["threads"]
    resources:
        verbosity=config["verbosity"],
        mem_mb=RES["data"]["mem-mb"],
        runtime=RES["data"]["runtime"],
    shell:
        f"bpflow prepare-regions {{input.config}} {RUN_OPTIONS} > {{log}} 2>&1"


rule dataset:
    input:
        config="results/{experiment}/configs/data_{dataset}_{split}.json",
        regions=lambda wc: region_bed(wc.experiment, DATASETS[wc.dataset][0], wc.split),
        files=lambda wc: experiment_inputs(wc.experiment),
    output:
        "results/{experiment}/data/{dataset}_{split}.h5",
    log:
        "results/{experiment}/logs/data_{dataset}_{split}.log",
    benchmark:
        "results/{experiment}/benchmarks/data_{dataset}_{split}.tsv"
    conda:
        "../../envs/bpflow.yaml"
    threads: RES["data"]["threads"]
    resources:
        verbosity=config["verbosity"],
        mem_mb=RES["data"]["mem-mb"],
        runtime=RES["data"]["runtime"],
    shell:
        f"bpflow prepare-data {{input.config}} {RUN_OPTIONS} > {{log}} 2>&1"
