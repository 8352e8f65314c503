# The run report (`snakemake --report results/report.html`): figures and tables drawn by
# `bpflow report-figures` (bpflow.report), each marked with report(...) under its
# experiment's category.  The training stages' loss plots (train.smk) and the metrics TSVs
# (evaluate.smk) are marked where they are made.  One job per experiment draws the
# evaluation figures (one process), another the footprint figures of experiments with motifs.


rule report_figures:
    input:
        config="results/{experiment}/configs/report_figures.json",
        metrics=expand("results/{{experiment}}/metrics/{regionset}_test.json", regionset=REGION_SETS),
        predictions=expand(
            "results/{{experiment}}/predictions/{model}_{regionset}_test.h5",
            model=EVAL_MODELS,
            regionset=REGION_SETS,
        ),
        data=expand("results/{{experiment}}/data/{regionset}_test.h5", regionset=REGION_SETS),
        qc=["results/{experiment}/qc/bias.json", "results/{experiment}/qc/combined.json"],
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
            labels={"experiment": "{experiment}", "checks": "qc-combined"},
        ),
    log:
        "results/{experiment}/logs/report_figures.log",
    conda:
        "../../envs/bpflow.yaml"
    threads: 1
    resources:
        verbosity=config["verbosity"],
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    shell:
        f"bpflow report-figures {{input.config}} {RUN_OPTIONS} > {{log}} 2>&1"


rule report_footprints:
    input:
        config="results/{experiment}/configs/report_footprints.json",
        footprints="results/{experiment}/footprints/footprints.json",
    output:
        html=report(
            "results/{experiment}/report/footprints.html",
            caption="../report/footprints_table.rst",
            category="{experiment}",
            subcategory="Footprints",
            labels={"experiment": "{experiment}", "content": "table"},
        ),
        png=report(
            "results/{experiment}/report/footprints.png",
            caption="../report/footprints.rst",
            category="{experiment}",
            subcategory="Footprints",
            labels={"experiment": "{experiment}", "content": "plots"},
        ),
    log:
        "results/{experiment}/logs/report_footprints.log",
    conda:
        "../../envs/bpflow.yaml"
    threads: 1
    resources:
        verbosity=config["verbosity"],
        mem_mb=EVAL["mem-mb"],
        runtime=EVAL["runtime"],
    shell:
        f"bpflow report-figures {{input.config}} {RUN_OPTIONS} > {{log}} 2>&1"
