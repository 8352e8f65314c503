# The run report (`snakemake --report results/report.html`): figures and tables drawn by
# bpflow.report through scripts/report_figures.py, each marked with report(...) under its
# experiment's category.  The training stages' loss plots (train.smk), the metrics TSVs and
# the footprints (evaluate.smk) are marked where they are made.  One job per experiment
# draws all of this rule's figures (Keras is imported once).


rule report_figures:
    input:
        metrics=expand("results/{{experiment}}/metrics/{regionset}_test.json", regionset=REGION_SETS),
        predictions=expand(
            "results/{{experiment}}/predictions/{model}_{regionset}_test.h5",
            model=EVAL_MODELS,
            regionset=REGION_SETS,
        ),
        data=expand("results/{{experiment}}/data/{regionset}_test.h5", regionset=REGION_SETS),
        qc="results/{experiment}/models/combined.qc.json",
    output:
        metrics=report(
            "results/{experiment}/report/metrics.html",
            caption="../report/metrics_table.rst",
            category="{experiment}",
            subcategory="Metrics",
            labels={"experiment": "{experiment}", "regions": "peaks and background (table)"},
        ),
        counts_peaks=report(
            "results/{experiment}/report/counts_peaks.png",
            caption="../report/counts_scatter.rst",
            category="{experiment}",
            subcategory="Counts",
            labels={"experiment": "{experiment}", "regions": "peaks"},
        ),
        counts_background=report(
            "results/{experiment}/report/counts_background.png",
            caption="../report/counts_scatter.rst",
            category="{experiment}",
            subcategory="Counts",
            labels={"experiment": "{experiment}", "regions": "background"},
        ),
        examples=report(
            "results/{experiment}/report/examples_peaks.png",
            caption="../report/example_regions.rst",
            category="{experiment}",
            subcategory="Example regions",
            labels={"experiment": "{experiment}", "regions": "top 3 test peaks"},
        ),
        qc=report(
            "results/{experiment}/report/qc.html",
            caption="../report/qc.rst",
            category="{experiment}",
            subcategory="Quality checks",
            labels={"experiment": "{experiment}", "checks": "train-combined"},
        ),
    log:
        "results/{experiment}/logs/report_figures.log",
    params:
        script=os.path.join(SCRIPTS, "report_figures.py"),
        args=lambda wc: report_figures_args(wc.experiment),
    threads: 1
    resources:
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    conda:
        "../../envs/bpflow.yaml"
    shell:
        "python {params.script} {params.args} > {log} 2>&1"
