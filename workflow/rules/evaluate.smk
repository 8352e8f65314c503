# Evaluation.  The quality checks of the combined model (qc_combined: always, after
# train_combined; docs/qc.md), and with `evaluate: true` the predictions of the combined,
# residual and (transformed) bias models on the held-out test chromosomes, peaks and
# background separately, their metrics (docs/evaluation.md) and the marginal footprints of
# the TF and bias motifs (docs/footprints.md).  The report figures: report.smk.


rule qc_bias:
    input:
        config="results/{experiment}/configs/qc_bias.json",
        model="results/{experiment}/models/bias.keras",
        history="results/{experiment}/models/bias.history.json",
        train=lambda wc: stage_data_files(wc.experiment, "bias", "train"),
        val=lambda wc: stage_data_files(wc.experiment, "bias", "val"),
    output:
        "results/{experiment}/qc/bias.json",
    log:
        "results/{experiment}/logs/qc_bias.log",
    conda:
        "../../envs/bpflow.yaml"
    threads: EVAL["threads"]
    resources:
        verbosity=config["verbosity"],
        backend=config["backend"],
        gpu=EVAL["gpu"],
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    shell:
        f"bpflow qc-bias {{input.config}} {MODEL_RUN_OPTIONS} > {{log}} 2>&1"


rule qc_combined:
    input:
        config="results/{experiment}/configs/qc_combined.json",
        models=lambda wc: [model_file(wc.experiment, m) for m in ("combined", "residual", "transformation")],
        histories=lambda wc: [f"{model_prefix(wc.experiment, s)}.history.json" for s in ("transformation", "combined")],
        data=lambda wc: qc_files(wc.experiment),
    output:
        "results/{experiment}/qc/combined.json",
    log:
        "results/{experiment}/logs/qc_combined.log",
    conda:
        "../../envs/bpflow.yaml"
    threads: EVAL["threads"]
    resources:
        verbosity=config["verbosity"],
        backend=config["backend"],
        gpu=EVAL["gpu"],
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    shell:
        f"bpflow qc-combined {{input.config}} {MODEL_RUN_OPTIONS} > {{log}} 2>&1"


rule predict:
    input:
        config="results/{experiment}/configs/predict_{model}_{regionset}.json",
        model=lambda wc: evaluation_model_file(wc.experiment, wc.model),
        data="results/{experiment}/data/{regionset}_test.h5",
    output:
        "results/{experiment}/predictions/{model}_{regionset}_test.h5",
    log:
        "results/{experiment}/logs/predict_{model}_{regionset}.log",
    benchmark:
        "results/{experiment}/benchmarks/predict_{model}_{regionset}.tsv"
    wildcard_constraints:
        model="|".join(EVAL_MODELS),
    conda:
        "../../envs/bpflow.yaml"
    threads: EVAL["threads"]
    resources:
        verbosity=config["verbosity"],
        backend=config["backend"],
        gpu=EVAL["gpu"],
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    shell:
        f"bpflow predict {{input.config}} {MODEL_RUN_OPTIONS} > {{log}} 2>&1"


rule metrics:
    input:
        config="results/{experiment}/configs/metrics_{regionset}.json",
        predictions=expand(
            "results/{{experiment}}/predictions/{model}_{{regionset}}_test.h5",
            model=EVAL_MODELS,
        ),
        data="results/{experiment}/data/{regionset}_test.h5",
    output:
        json="results/{experiment}/metrics/{regionset}_test.json",
        tsv=report(
            "results/{experiment}/metrics/{regionset}_test.tsv",
            caption="../report/metrics.rst",
            category="{experiment}",
            subcategory="Metrics",
            labels={"experiment": "{experiment}", "regions": "{regionset} (TSV, all columns)"},
        ),
    log:
        "results/{experiment}/logs/metrics_{regionset}.log",
    conda:
        "../../envs/bpflow.yaml"
    threads: 1
    resources:
        verbosity=config["verbosity"],
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    shell:
        f"bpflow metrics {{input.config}} {RUN_OPTIONS} > {{log}} 2>&1"


# Marginal footprints (docs/footprints.md): each TF motif and the bias motif inserted into
# the test chromosomes' background sequences, scored by the combined, residual and bias
# models.  Runs for experiments with motifs (key `footprints`, or a simulate block).
rule footprints:
    input:
        config="results/{experiment}/configs/footprints.json",
        models=lambda wc: [evaluation_model_file(wc.experiment, m) for m in EVAL_MODELS],
        background="results/{experiment}/data/background_test.h5",
        motifs=lambda wc: footprint_files(wc.experiment),
    output:
        json="results/{experiment}/footprints/footprints.json",
        tsv="results/{experiment}/footprints/footprints.tsv",
    log:
        "results/{experiment}/logs/footprints.log",
    benchmark:
        "results/{experiment}/benchmarks/footprints.tsv"
    conda:
        "../../envs/bpflow.yaml"
    threads: EVAL["threads"]
    resources:
        verbosity=config["verbosity"],
        backend=config["backend"],
        gpu=EVAL["gpu"],
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    shell:
        f"bpflow footprints {{input.config}} {MODEL_RUN_OPTIONS} > {{log}} 2>&1"
