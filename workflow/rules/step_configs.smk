# Every step's JSON config, results/<experiment>/configs/<name>.json, written by one rule
# with the builder registered for <name> (configs/<stage>.smk).  Local and atomic.


rule step_config:
    output:
        "results/{experiment}/configs/{name}.json",
    log:
        "results/{experiment}/logs/configs/{name}.log",
    wildcard_constraints:
        name="[A-Za-z0-9_.-]+",
    localrule: True
    params:
        text=lambda wc: json_text(step_config(wc.experiment, wc.name)),
    run:
        write_text(output[0], params.text)
