# The embedded demo's inputs: `bpflow simulate` writes a synthetic genome, stranded
# ChIP-nexus-like bigWigs (experiment and control), peaks and the noiseless truth tracks.
# Experiments with a `simulate:` block read their genome, peaks and bigWigs from here.


rule simulate_config:
    output:
        "results/simulated/{sim}.json",
    log:
        "results/simulated/logs/{sim}.config.log",
    localrule: True
    params:
        text=lambda wc: json_text(simulate_json(wc.sim)),
    run:
        write_text(output[0], params.text)


rule simulate:
    input:
        config="results/simulated/{sim}.json",
    output:
        genome="results/simulated/{sim}/genome.fa",
        index="results/simulated/{sim}/genome.fa.fai",
        peaks="results/simulated/{sim}/peaks.narrowPeak",
        experiment=multiext("results/simulated/{sim}/experiment", ".plus.bw", ".minus.bw"),
        control=multiext("results/simulated/{sim}/control", ".plus.bw", ".minus.bw"),
        truth="results/simulated/{sim}/truth.json",
    log:
        "results/simulated/logs/{sim}.log",
    benchmark:
        "results/simulated/benchmarks/{sim}.tsv"
    conda:
        "../../envs/bpflow.yaml"
    threads: RES["simulate"]["threads"]
    resources:
        verbosity=config["verbosity"],
        mem_mb=RES["simulate"]["mem-mb"],
        runtime=RES["simulate"]["runtime"],
    shell:
        f"bpflow simulate {{input.config}} {RUN_OPTIONS} > {{log}} 2>&1"
