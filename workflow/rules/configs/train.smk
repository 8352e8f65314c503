# The step configs of the train stage (rules: ../train.smk): JSON builders, each
# registered for the config names it writes (common.smk's register_config).

TRAIN = RES["training"]


def stage_datasets(e, stage):
    """The datasets (names of DATASETS) a training stage learns from."""
    exp = EXPERIMENTS[e]
    if stage == "bias":
        return ["control-peaks"] if exp["bias-source"] == "control" else ["bias-background"]
    if stage == "transformation":
        return [f"bias-{r}" for r in exp["transformation"]["regions"]]
    return list(exp["training"]["combined-regions"])


def stage_data_files(e, stage, split):
    return [dataset_h5(e, d, split) for d in stage_datasets(e, stage)]


def stage_data(e, stage, split):
    """train-data / val-data of a stage: one file, or a list when it learns from several."""
    files = [dataset_h5(e, d, split) for d in stage_datasets(e, stage)]
    return files[0] if len(files) == 1 else files


def training_heads(e, stage):
    heads = []
    for head in EXPERIMENTS[e]["heads"]:
        h = {
            "head-name": head["head-name"],
            "num-tasks": len(head["bigwigs"]),
            "profile-loss-weight": head["profile-loss-weight"],
            "counts-loss-frac-target": head["counts-loss-frac-target"],
        }
        if "counts-loss-weight" in head:
            h["counts-loss-weight"] = head["counts-loss-weight"]
        if stage == "combined":
            h["use-bias-counts"] = head["use-bias-counts"]
            h["counts-combination"] = head["counts-combination"]
        heads.append(h)
    return heads


def _settings(e, stage):
    exp = EXPERIMENTS[e]
    stage_cfg = exp["training"][stage]
    settings = {k: v for k, v in stage_cfg.items() if k not in ("extra", "seed")}
    settings["output-prefix"] = model_prefix(e, stage)
    settings["max-jitter"] = exp["max-jitter"]
    settings["seed"] = stage_cfg.get("seed", exp["training"]["seed"])
    settings.update(copy.deepcopy(stage_cfg.get("extra", {})))
    return settings


def _architecture(e, which, input_length, model_name):
    exp = EXPERIMENTS[e]
    arch = exp[f"{which}-architecture"]
    return {
        "architecture-name": "bpnet",
        "input-length": input_length,
        "output-length": exp["output-length"],
        "model-name": model_name,
        "filters": arch["filters"],
        "layers": arch["layers"],
        "input-filter-width": arch["input-filter-width"],
        "output-filter-width": arch["output-filter-width"],
    }


def _training_common(e, stage, train, val):
    return {"train-data": train, "val-data": val, "heads": training_heads(e, stage)}


def train_bias_json(e):
    exp = EXPERIMENTS[e]
    settings = _settings(e, "bias")
    settings["architecture"] = _architecture(e, "bias", exp["bias-input-length"], "bias")
    cfg = {"settings": settings}
    cfg.update(_training_common(e, "bias", stage_data(e, "bias", "train"), stage_data(e, "bias", "val")))
    return cfg


def train_transformation_json(e):
    exp = EXPERIMENTS[e]
    settings = _settings(e, "transformation")
    tr = exp["transformation"]
    settings.update(
        {
            "solo-model-file": model_file(e, "bias"),
            "input-length": exp["bias-input-length"],
            "output-length": exp["output-length"],
            "profile-architecture": copy.deepcopy(tr["profile-architecture"]),
            "counts-architecture": copy.deepcopy(tr["counts-architecture"]),
        }
    )
    if transformation_counts_split(e):
        settings["counts-fit"] = tr["counts-fit"]
    settings.update(copy.deepcopy(tr.get("extra", {})))
    cfg = {"settings": settings}
    cfg.update(
        _training_common(
            e,
            "transformation",
            stage_data(e, "transformation", "train"),
            stage_data(e, "transformation", "val"),
        )
    )
    if transformation_counts_split(e):
        cfg["counts-train-data"] = dataset_h5(e, "bias-background", "train")
        cfg["counts-val-data"] = dataset_h5(e, "bias-background", "val")
    return cfg


def transformation_counts_split(e):
    """True when the transformation's counts part is fitted on the background regions
    (recipe bpflow; a passthrough counts part has nothing to fit)."""
    tr = EXPERIMENTS[e]["transformation"]
    return tr["recipe"] == "bpflow" and tr["counts-architecture"]["name"] != "passthrough"


def transformation_counts_files(e):
    """Extra inputs of train_transformation: the background datasets of the counts fit."""
    if not transformation_counts_split(e):
        return []
    return [dataset_h5(e, "bias-background", s) for s in ("train", "val")]


def train_combined_json(e):
    exp = EXPERIMENTS[e]
    settings = _settings(e, "combined")
    settings["architecture"] = _architecture(e, "residual", exp["residual-input-length"], "residual")
    settings["transformation-model"] = {"transformation-model-file": model_file(e, "transformation")}
    settings["combined-model-file"] = model_file(e, "combined")
    settings["residual-model-file"] = model_file(e, "residual")
    cfg = {"settings": settings}
    cfg.update(_training_common(e, "combined", stage_data(e, "combined", "train"), stage_data(e, "combined", "val")))
    return cfg


TRAIN_JSON = {
    "bias": train_bias_json,
    "transformation": train_transformation_json,
    "combined": train_combined_json,
}


register_config(r"train_(?P<stage>bias|transformation|combined)", lambda e, stage: TRAIN_JSON[stage](e))
