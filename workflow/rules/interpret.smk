# Contribution scores (interpret.enabled; docs/contributions.md): DeepSHAP of a model's head
# and target on a seeded sample of a region set's windows, `bpflow contributions
# configs/contributions_<model>_<regions>.<head>.<target>.json`.  One job per model, region
# set, head and target (a rule's outputs cannot depend on an experiment's heads), each
# writing interpret/<model>_<regions>.<head>.<target>.h5 and the bigWig of the projected
# contributions.  GPU jobs, like training and predictions.


rule contributions:
    input:
        config="results/{experiment}/configs/contributions_{model}_{regions}.{head}.{target}.json",
        model=lambda wc: interpret_model_file(wc.experiment, wc.model),
        data=lambda wc: interpret_dataset(wc.experiment, wc.regions),
        genome=lambda wc: EXPERIMENTS[wc.experiment]["genome"],
    output:
        h5="results/{experiment}/interpret/{model}_{regions}.{head}.{target}.h5",
        bigwig="results/{experiment}/interpret/{model}_{regions}.{head}.{target}.bw",
    log:
        "results/{experiment}/logs/contributions_{model}_{regions}.{head}.{target}.log",
    benchmark:
        "results/{experiment}/benchmarks/contributions_{model}_{regions}.{head}.{target}.tsv"
    wildcard_constraints:
        model="|".join(INTERPRET_MODELS),
        regions="|".join(INTERPRET_REGIONS),
        head=INTERPRET_HEADS,
        target="|".join(INTERPRET_TARGETS),
    conda:
        "../../envs/bpflow.yaml"
    threads: INTERPRET["threads"]
    resources:
        verbosity=config["verbosity"],
        gpu=INTERPRET["gpu"],
        mem_mb=INTERPRET["mem-mb"],
        runtime=INTERPRET["runtime"],
    shell:
        f"bpflow contributions {{input.config}} {RUN_OPTIONS} > {{log}} 2>&1"
