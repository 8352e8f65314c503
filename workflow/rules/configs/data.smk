# The step configs of the data stage (rules: ../data.smk): JSON builders, each
# registered for the config names it writes (common.smk's register_config).


def regions_json(e, regionset):
    """prepare-regions config: the peaks (with background sampling unless bias-source is
    bed), or the user's background BED (bias-source bed), split by chromosome."""
    exp = EXPERIMENTS[e]
    opts = copy.deepcopy(exp["regions"])
    background = opts.pop("background")
    heads = []
    for h in exp["heads"]:
        head = {"head-name": h["head-name"], "bigwig-names": list(h["bigwigs"])}
        head["use-absolute-values"] = h["use-absolute-values"]
        if regionset == "peaks":
            for key in ("max-counts", "max-quantile", "min-counts", "min-quantile"):
                if key in h:
                    head[key] = h[key]
        heads.append(head)
    cfg = {
        "genome": exp["genome"],
        "input-length": exp["residual-input-length"],
        "output-length": exp["output-length"],
        "max-jitter": exp["max-jitter"],
        "heads": heads,
        "splits": {
            "regions": [exp["peaks"] if regionset == "peaks" else exp["background-bed"]],
            "train-chroms": list(exp["splits"]["train"]),
            "val-chroms": list(exp["splits"]["val"]),
            "test-chroms": list(exp["splits"]["test"]),
        },
        "output-prefix": f"results/{e}/regions/{regionset}",
    }
    cfg.update(opts)
    if regionset == "background":
        cfg["resize-mode"] = "center"
    elif exp["bias-source"] != "bed":
        cfg["background"] = background
    if "blacklist" in exp:
        cfg["blacklist"] = exp["blacklist"]
    return cfg


def data_heads(e, control=False):
    heads = []
    for head in EXPERIMENTS[e]["heads"]:
        h = {
            "head-name": head["head-name"],
            "bigwig-files": head["control-bigwigs"] if control else head["bigwigs"],
            "revcomp-task-order": head["revcomp-task-order"],
            "use-absolute-values": head["use-absolute-values"],
        }
        heads.append(h)
    return heads


def data_json(e, dataset, split):
    exp = EXPERIMENTS[e]
    regionset, bigwigs, model = DATASETS[dataset]
    return {
        "genome": exp["genome"],
        "input-length": exp[f"{model}-input-length"],
        "output-length": exp["output-length"],
        "max-jitter": exp["max-jitter"],
        "regions": region_bed(e, regionset, split),
        "output-h5": dataset_h5(e, dataset, split),
        "reverse-complement": exp["reverse-complement"],
        "heads": data_heads(e, bigwigs == "control-bigwigs"),
    }


register_config(r"regions_(?P<regionset>peaks|background)", regions_json)
register_config(r"data_(?P<dataset>[a-z-]+)_(?P<split>train|val|test)", data_json)
