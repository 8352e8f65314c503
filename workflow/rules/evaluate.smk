# Evaluation (config key `evaluate: true`): predictions of the combined, residual and
# (transformed) bias models on the held-out test chromosomes, peaks and background
# separately, their metrics (docs/evaluation.md) and the marginal footprints of the TF and
# bias motifs (docs/footprints.md).  The report figures: report.smk.

rule predict_config:
    output:
        "results/{experiment}/configs/predict_{model}_{regionset}.json",
    params:
        text=lambda wc: json_text(predict_json(wc.experiment, wc.model, wc.regionset)),
    log:
        "results/{experiment}/logs/configs/predict_{model}_{regionset}.log",
    wildcard_constraints:
        model="|".join(EVAL_MODELS),
    localrule: True
    run:
        write_text(output[0], params.text)


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
    threads: EVAL["threads"]
    resources:
        gpu=EVAL["gpu"],
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    conda:
        "../../envs/bpflow.yaml"
    shell:
        "TF_NUM_INTRAOP_THREADS={threads} TF_NUM_INTEROP_THREADS=2 "
        "bpflow predict {input.config} > {log} 2>&1"


rule metrics_config:
    output:
        "results/{experiment}/configs/metrics_{regionset}.json",
    params:
        text=lambda wc: json_text(metrics_json(wc.experiment, wc.regionset)),
    log:
        "results/{experiment}/logs/configs/metrics_{regionset}.log",
    localrule: True
    run:
        write_text(output[0], params.text)


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
    threads: 1
    resources:
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    conda:
        "../../envs/bpflow.yaml"
    shell:
        "bpflow metrics {input.config} > {log} 2>&1"


# Marginal footprints (docs/footprints.md): each TF motif and the bias motif inserted into
# the test chromosomes' background sequences, scored by the combined, residual and bias
# models.  Runs for experiments with motifs (key `footprints`, or a simulate block).
rule footprints_config:
    output:
        "results/{experiment}/configs/footprints.json",
    params:
        text=lambda wc: json_text(footprints_json(wc.experiment)),
    log:
        "results/{experiment}/logs/configs/footprints.log",
    localrule: True
    run:
        write_text(output[0], params.text)


rule footprints:
    input:
        config="results/{experiment}/configs/footprints.json",
        models=lambda wc: [evaluation_model_file(wc.experiment, m) for m in EVAL_MODELS],
        background="results/{experiment}/data/background_test.h5",
        motifs=lambda wc: footprint_files(wc.experiment),
    output:
        json="results/{experiment}/footprints/footprints.json",
        tsv="results/{experiment}/footprints/footprints.tsv",
        html=report(
            "results/{experiment}/footprints/footprints.html",
            caption="../report/footprints_table.rst",
            category="{experiment}",
            subcategory="Footprints",
            labels={"experiment": "{experiment}", "content": "table"},
        ),
        png=report(
            "results/{experiment}/footprints/footprints.png",
            caption="../report/footprints.rst",
            category="{experiment}",
            subcategory="Footprints",
            labels={"experiment": "{experiment}", "content": "plots"},
        ),
    log:
        "results/{experiment}/logs/footprints.log",
    benchmark:
        "results/{experiment}/benchmarks/footprints.tsv"
    params:
        script=os.path.join(SCRIPTS, "footprints.py"),
    threads: EVAL["threads"]
    resources:
        gpu=EVAL["gpu"],
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    conda:
        "../../envs/bpflow.yaml"
    shell:
        "TF_NUM_INTRAOP_THREADS={threads} TF_NUM_INTEROP_THREADS=2 "
        "python {params.script} {input.config} > {log} 2>&1"
