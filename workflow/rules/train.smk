# The three training stages, each `bpflow train-<stage> configs/train_<stage>.json`.  They
# declare one GPU; locally profiles/default serialises them (`resources: gpu: 1`), on SLURM
# the executor plugin asks for `--gpus=1`.  Each stage checkpoints every epoch outside its
# declared outputs, so after a failed or killed job the same command resumes training
# instead of starting over.


rule train_bias:
    input:
        config="results/{experiment}/configs/train_bias.json",
        train=lambda wc: stage_data_files(wc.experiment, "bias", "train"),
        val=lambda wc: stage_data_files(wc.experiment, "bias", "val"),
    output:
        model="results/{experiment}/models/bias.keras",
        history="results/{experiment}/models/bias.history.json",
        plot=report(
            "results/{experiment}/models/bias.loss.png",
            caption="../report/loss.rst",
            category="{experiment}",
            subcategory="Training",
            labels={"experiment": "{experiment}", "stage": "bias"},
        ),
    log:
        "results/{experiment}/logs/train_bias.log",
    benchmark:
        "results/{experiment}/benchmarks/train_bias.tsv"
    conda:
        "../../envs/bpflow.yaml"
    threads: TRAIN["threads"]
    resources:
        verbosity=config["verbosity"],
        backend=config["backend"],
        gpu=TRAIN["gpu"],
        mem_mb=TRAIN["mem-mb"],
        runtime=TRAIN["runtime"],
    shell:
        f"bpflow train-bias {{input.config}} {MODEL_RUN_OPTIONS} > {{log}} 2>&1"


rule train_transformation:
    input:
        config="results/{experiment}/configs/train_transformation.json",
        bias="results/{experiment}/models/bias.keras",
        train=lambda wc: stage_data_files(wc.experiment, "transformation", "train"),
        val=lambda wc: stage_data_files(wc.experiment, "transformation", "val"),
        counts=lambda wc: transformation_counts_files(wc.experiment),
    output:
        model="results/{experiment}/models/transformation.keras",
        history="results/{experiment}/models/transformation.history.json",
        plot=report(
            "results/{experiment}/models/transformation.loss.png",
            caption="../report/loss.rst",
            category="{experiment}",
            subcategory="Training",
            labels={"experiment": "{experiment}", "stage": "transformation"},
        ),
    log:
        "results/{experiment}/logs/train_transformation.log",
    benchmark:
        "results/{experiment}/benchmarks/train_transformation.tsv"
    conda:
        "../../envs/bpflow.yaml"
    threads: TRAIN["threads"]
    resources:
        verbosity=config["verbosity"],
        backend=config["backend"],
        gpu=TRAIN["gpu"],
        mem_mb=TRAIN["mem-mb"],
        runtime=TRAIN["runtime"],
    shell:
        f"bpflow train-transformation {{input.config}} {MODEL_RUN_OPTIONS} > {{log}} 2>&1"


rule train_combined:
    input:
        config="results/{experiment}/configs/train_combined.json",
        transformation="results/{experiment}/models/transformation.keras",
        train=lambda wc: stage_data_files(wc.experiment, "combined", "train"),
        val=lambda wc: stage_data_files(wc.experiment, "combined", "val"),
    output:
        combined="results/{experiment}/models/combined.keras",
        residual="results/{experiment}/models/residual.keras",
        history="results/{experiment}/models/combined.history.json",
        plot=report(
            "results/{experiment}/models/combined.loss.png",
            caption="../report/loss.rst",
            category="{experiment}",
            subcategory="Training",
            labels={"experiment": "{experiment}", "stage": "combined"},
        ),
    log:
        "results/{experiment}/logs/train_combined.log",
    benchmark:
        "results/{experiment}/benchmarks/train_combined.tsv"
    conda:
        "../../envs/bpflow.yaml"
    threads: TRAIN["threads"]
    resources:
        verbosity=config["verbosity"],
        backend=config["backend"],
        gpu=TRAIN["gpu"],
        mem_mb=TRAIN["mem-mb"],
        runtime=TRAIN["runtime"],
    shell:
        f"bpflow train-combined {{input.config}} {MODEL_RUN_OPTIONS} > {{log}} 2>&1"
