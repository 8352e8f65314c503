# The step configs of the evaluate stage (rules: ../evaluate.smk): JSON builders, each
# registered for the config names it writes (common.smk's register_config).

EVAL = RES["evaluation"]
EVAL_MODELS = ["combined", "residual", "bias"]


def evaluation_model_file(e, model):
    return model_file(e, "transformation" if model == "bias" else model)


def footprints_prefix(e):
    return f"results/{e}/footprints/footprints"


# ----------------------------------------------------------------------------------------
# Quality checks of the combined model


def qc_files(e):
    """Inputs of qc_combined besides the models: validation and background data, the
    simulation's truth and the footprints block's motif files."""
    files = [dataset_h5(e, "peaks", "val"), dataset_h5(e, "background", "val")]
    files += [simulation_truth(e)] if simulation_truth(e) else []
    return files + footprint_motif_files(e)


def qc_bias_json(e):
    """qc-bias config: the bias model against a k-mer table fitted on its own training data,
    scored on its validation data; its training history's epoch-limit check."""
    opts = EXPERIMENTS[e]["training"]["qc"]
    return {
        "enabled": opts["enabled"],
        "bias-model-file": model_file(e, "bias"),
        "heads": [{"head-name": h["head-name"]} for h in EXPERIMENTS[e]["heads"]],
        "train-data": stage_data(e, "bias", "train"),
        "val-data": stage_data(e, "bias", "val"),
        "histories": {"bias": f"{model_prefix(e, 'bias')}.history.json"},
        "output-json": qc_json(e, "bias"),
    }


def qc_combined_json(e):
    """qc-combined config: counts checks on the validation peaks; footprint checks with the
    simulation's motifs (simulate block) and/or the footprints block's motifs."""
    exp = EXPERIMENTS[e]
    opts = exp["training"]["qc"]
    cfg = {
        "enabled": opts["enabled"],
        "combined-model-file": model_file(e, "combined"),
        "residual-model-file": model_file(e, "residual"),
        "bias-model-file": model_file(e, "transformation"),
        "heads": [{"head-name": h["head-name"], "use-bias-counts": h["use-bias-counts"]} for h in exp["heads"]],
        "data": dataset_h5(e, "peaks", "val"),
        "background-data": dataset_h5(e, "background", "val"),
        "min-residual-share": opts["min-residual-share"],
        "num-sequences": opts["num-sequences"],
        "max-bias-tf-ratio": opts["max-bias-tf-ratio"],
        "max-residual-bias-ratio": opts["max-residual-bias-ratio"],
        "seed": exp["training"]["seed"],
        "histories": {s: f"{model_prefix(e, s)}.history.json" for s in ("transformation", "combined")},
        "output-json": qc_json(e, "combined"),
    }
    if simulation_truth(e):
        cfg["truth-json"] = simulation_truth(e)
    fp = exp.get("footprints", {})
    if fp.get("motifs"):
        cfg["motifs"] = copy.deepcopy(fp["motifs"])
    if fp.get("bias-motif"):
        cfg["bias-motifs"] = {"bias": copy.deepcopy(fp["bias-motif"])}
    return cfg


# ----------------------------------------------------------------------------------------
# Predictions, metrics, footprints


def predict_json(e, model, regionset):
    return {
        "model-file": evaluation_model_file(e, model),
        "data": dataset_h5(e, regionset, "test"),
        "output-h5": f"results/{e}/predictions/{model}_{regionset}_test.h5",
        "revcomp-average": EXPERIMENTS[e]["revcomp-average"],
        "heads": [
            {
                "head-name": h["head-name"],
                "num-tasks": len(h["bigwigs"]),
                "revcomp-task-order": h["revcomp-task-order"],
            }
            for h in EXPERIMENTS[e]["heads"]
        ],
    }


def metrics_json(e, regionset):
    return {
        "predictions": {m: f"results/{e}/predictions/{m}_{regionset}_test.h5" for m in EVAL_MODELS},
        "data": dataset_h5(e, regionset, "test"),
        "region-set": regionset,
        "output-json": f"results/{e}/metrics/{regionset}_test.json",
        "output-tsv": f"results/{e}/metrics/{regionset}_test.tsv",
    }


def footprint_motifs(e):
    """TF motifs, bias motif and truth.json of an experiment's footprints (config key
    `footprints`; a simulation's truth fills in what is not given), or None without motifs."""
    exp = EXPERIMENTS[e]
    fp = exp["footprints"]
    truth = simulation_truth(e)
    tfs = fp.get("motifs")
    bias = {"bias": fp["bias-motif"]} if "bias-motif" in fp else None
    if truth is None and not tfs and not bias:
        return None
    return {"motifs": tfs, "bias-motifs": bias, "truth": truth if tfs is None or bias is None else None}


def footprint_motif_files(e):
    """Motif files of experiment e's footprints block (for `input:`)."""
    fp = EXPERIMENTS[e]["footprints"]
    entries = list((fp.get("motifs") or {}).values()) + ([fp["bias-motif"]] if "bias-motif" in fp else [])
    files = []
    for entry in entries:
        if isinstance(entry, dict) and "file" in entry:
            files.append(entry["file"])
        elif isinstance(entry, str) and os.path.isfile(entry):
            files.append(entry)
    return files


def footprint_files(e):
    """Motif files and the truth.json the footprints of experiment e read (for `input:`)."""
    spec = footprint_motifs(e) or {}
    return ([spec["truth"]] if spec.get("truth") else []) + footprint_motif_files(e)


def footprints_json(e):
    exp = EXPERIMENTS[e]
    fp = exp["footprints"]
    spec = footprint_motifs(e)
    if spec is None:
        _fail(f"experiments/{e}: no motif for the footprints (give footprints: motifs or bias-motif)")
    out = footprints_prefix(e)
    cfg = {
        "models": {m: evaluation_model_file(e, m) for m in EVAL_MODELS},
        "background-h5": dataset_h5(e, "background", "test"),
        "num-backgrounds": fp["num-backgrounds"],
        "seed": fp["seed"],
        "orientations": fp["orientations"],
        "pwm-mode": fp["pwm-mode"],
        "head-names": [h["head-name"] for h in exp["heads"]],
        "output-json": f"{out}.json",
        "output-tsv": f"{out}.tsv",
    }
    for key in ("motifs", "bias-motifs"):
        if spec[key]:
            cfg[key] = copy.deepcopy(spec[key])
    if spec["truth"]:
        cfg["simulation-truth"] = spec["truth"]
    return cfg


def evaluation_outputs(e):
    return [f"results/{e}/metrics/{r}_test.tsv" for r in REGION_SETS] + report_outputs(e)


register_config("qc_bias", qc_bias_json)
register_config("qc_combined", qc_combined_json)
register_config(r"predict_(?P<model>combined|residual|bias)_(?P<regionset>peaks|background)", predict_json)
register_config(r"metrics_(?P<regionset>peaks|background)", metrics_json)
register_config("footprints", footprints_json)
