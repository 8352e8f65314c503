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
        backend=config["backend"],
        gpu=INTERPRET["gpu"],
        mem_mb=INTERPRET["mem-mb"],
        runtime=INTERPRET["runtime"],
    shell:
        f"bpflow contributions {{input.config}} {MODEL_RUN_OPTIONS} > {{log}} 2>&1"


# Motifs (interpret.motifs; docs/motifs.md): TF-MoDISco patterns of each contribution file,
# named by TOMTOM against JASPAR (+ the simulation's motifs, + the user's files), and the
# factorization check: a residual pattern that matches the bias model's top
# pattern, or a bias-model pattern that matches a TF motif, is a QC warning (qc/motifs_*.json,
# the end-of-run summary, the report's "Motifs" pages).  CPU jobs (numba).


rule motifs:
    input:
        config="results/{experiment}/configs/motifs_{model}_{regions}.{head}.{target}.json",
        files=lambda wc: motifs_inputs(wc.experiment, wc.model, wc.regions, wc.head, wc.target),
    output:
        json="results/{experiment}/motifs/{model}_{regions}.{head}.{target}.json",
        tsv="results/{experiment}/motifs/{model}_{regions}.{head}.{target}.tsv",
        meme="results/{experiment}/motifs/{model}_{regions}.{head}.{target}.meme",
        modisco="results/{experiment}/motifs/{model}_{regions}.{head}.{target}.modisco.h5",
        logos=directory("results/{experiment}/motifs/{model}_{regions}.{head}.{target}.logos"),
        qc="results/{experiment}/qc/motifs_{model}_{regions}.{head}.{target}.json",
        html=report(
            "results/{experiment}/motifs/{model}_{regions}.{head}.{target}.html",
            caption="../report/motifs.rst",
            category="{experiment}",
            subcategory="Motifs",
            labels={
                "experiment": "{experiment}",
                "model": "{model}",
                "regions": "{regions}",
                "head": "{head}",
                "target": "{target}",
            },
        ),
    log:
        "results/{experiment}/logs/motifs_{model}_{regions}.{head}.{target}.log",
    benchmark:
        "results/{experiment}/benchmarks/motifs_{model}_{regions}.{head}.{target}.tsv"
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
        mem_mb=INTERPRET["mem-mb"],
        runtime=INTERPRET["runtime"],
    shell:
        f"bpflow motifs {{input.config}} {RUN_OPTIONS} > {{log}} 2>&1"
