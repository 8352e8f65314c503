# The step configs of the interpret stage (rules: ../interpret.smk): JSON builders, each
# registered for the config names it writes (common.smk's register_config).

INTERPRET = RES["interpret"]
INTERPRET_MODELS = ["residual", "bias", "combined"]
INTERPRET_TARGETS = ["counts", "profile"]
INTERPRET_REGIONS = ["peaks-test", "peaks-val", "background-test", "background-val"]
# every head name of every experiment (the rule's `head` wildcard)
INTERPRET_HEADS = names_regex(sorted({h["head-name"] for x in EXPERIMENTS.values() for h in x["heads"]}))


def _check_interpret(e):
    """Cross-key rules of an experiment's interpret block the schema cannot express."""
    names = [h["head-name"] for h in EXPERIMENTS[e]["heads"]]
    for head in EXPERIMENTS[e]["interpret"].get("heads", []):
        if head not in names:
            _fail(f"experiments/{e}/interpret/heads: {head!r} is not a head of the experiment ({', '.join(names)})")


for _e in EXPERIMENTS:
    _check_interpret(_e)


def interpret_model_file(e, model):
    """residual, combined, or bias: the bias solo model (not the transformed bias branch)."""
    return model_file(e, model)


def interpret_dataset(e, regions):
    """The dataset HDF5 of a region set and split (peaks-test, ...), at the residual input
    length: every model reads the same windows (the step centre-crops the sequences to the
    bias solo model's shorter input)."""
    regionset, split = regions.split("-")
    return dataset_h5(e, regionset, split)


def interpret_prefix(e, model, regions):
    return f"results/{e}/interpret/{model}_{regions}"


def interpret_heads(e):
    """The head names an experiment's contributions explain (interpret.heads, else all)."""
    exp = EXPERIMENTS[e]
    return exp["interpret"].get("heads") or [h["head-name"] for h in exp["heads"]]


def contributions_json(e, model, regions, head, target):
    """contributions config of one model, region set, head and target (one job each)."""
    exp = EXPERIMENTS[e]
    opts = exp["interpret"]
    return {
        "model-file": interpret_model_file(e, model),
        "heads": [{"head-name": h["head-name"], "num-tasks": len(h["bigwigs"])} for h in exp["heads"]],
        "contribution-heads": [head],
        "targets": [target],
        "genome": exp["genome"],
        "regions": {"dataset": interpret_dataset(e, regions)},
        "max-regions": opts["max-regions"],
        "num-references": opts["num-references"],
        "seed": opts["seed"],
        "batch-size": opts["batch-size"],
        "output-prefix": interpret_prefix(e, model, regions),
        "bigwig": True,
    }


def interpret_outputs(e):
    """The contribution files and motifs of experiment e (empty unless interpret.enabled)."""
    opts = EXPERIMENTS[e]["interpret"]
    if not opts["enabled"]:
        return []
    outs = [
        f"{interpret_prefix(e, m, r)}.{h}.{t}.{ext}"
        for m in opts["models"]
        for r in opts["regions"]
        for h in interpret_heads(e)
        for t in opts["targets"]
        for ext in ("h5", "bw")
    ]
    return outs + [f"{motifs_prefix(e, *job)}.json" for job in motifs_jobs(e)]


# ----------------------------------------------------------------------------------------
# Motifs (interpret.motifs; docs/motifs.md): TF-MoDISco and TOMTOM on each contribution
# file, and on the bias model's profile contributions, whose top pattern is the bias motif
# the residual's patterns are checked against (a combined model's are not checked: it
# holds the bias by design).


def motifs_prefix(e, model, regions, head, target):
    return f"results/{e}/motifs/{model}_{regions}.{head}.{target}"


def motifs_qc_json(e, model, regions, head, target):
    return f"results/{e}/qc/motifs_{model}_{regions}.{head}.{target}.json"


def bias_motifs_summary(e, regions, head):
    """The bias model's motifs summary on a region set and head: its top pattern is the bias
    motif of the residual's check."""
    return f"{motifs_prefix(e, 'bias', regions, head, 'profile')}.json"


def motifs_jobs(e):
    """(model, regions, head, target) of every motifs job of experiment e: each contribution
    file of interpret.models, plus the bias model's profile contributions."""
    opts = EXPERIMENTS[e]["interpret"]
    if not (opts["enabled"] and opts["motifs"]["enabled"]):
        return []
    jobs = []
    for r in opts["regions"]:
        for h in interpret_heads(e):
            jobs += [(m, r, h, t) for m in opts["models"] for t in opts["targets"]]
            if ("bias", r, h, "profile") not in jobs:
                jobs.append(("bias", r, h, "profile"))
    return jobs


def motifs_inputs(e, model, regions, head, target):
    """The contribution file, the database files and, for a residual model, the
    bias model's motifs summary (its top pattern is the bias motif of the check)."""
    files = [f"{interpret_prefix(e, model, regions)}.{head}.{target}.h5"]
    files += EXPERIMENTS[e]["interpret"]["motifs"]["database"]["motif-files"]
    files += [simulation_truth(e)] if simulation_truth(e) else []
    files += [bias_motifs_summary(e, regions, head)] if model == "residual" else []
    return files


def motifs_json(e, model, regions, head, target):
    """motifs config of one contribution file."""
    exp = EXPERIMENTS[e]
    opts = exp["interpret"]["motifs"]
    database = {"jaspar": opts["database"]["jaspar"], "motif-files": opts["database"]["motif-files"]}
    if simulation_truth(e):
        database["simulation-truth"] = simulation_truth(e)
    cfg = {
        "contributions-file": f"{interpret_prefix(e, model, regions)}.{head}.{target}.h5",
        "output-prefix": motifs_prefix(e, model, regions, head, target),
        "model": model,
        "check": {"residual": "residual", "bias": "bias"}.get(model, "none"),
        "database": database,
        "q-threshold": opts["q-threshold"],
        "window": opts["window"],
        "max-seqlets": opts["max-seqlets"],
        "leiden-runs": opts["leiden-runs"],
        "seed": exp["interpret"]["seed"],
        "qc-output": motifs_qc_json(e, model, regions, head, target),
    }
    if model == "residual":
        cfg["bias-motifs-json"] = bias_motifs_summary(e, regions, head)
        if opts["bias-motifs"]:
            cfg["bias-motifs"] = opts["bias-motifs"]
    return cfg


register_config(
    r"motifs_(?P<model>residual|bias|combined)_(?P<regions>(?:peaks|background)-(?:test|val))"
    r"\.(?P<head>.+)\.(?P<target>counts|profile)",
    motifs_json,
)
register_config(
    r"contributions_(?P<model>residual|bias|combined)_(?P<regions>(?:peaks|background)-(?:test|val))"
    r"\.(?P<head>.+)\.(?P<target>counts|profile)",
    contributions_json,
)
