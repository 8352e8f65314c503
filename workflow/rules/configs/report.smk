# The step configs of the report stage (rules: ../report.smk): JSON builders, each
# registered for the config names it writes (common.smk's register_config).


def report_dir(e):
    return f"results/{e}/report"


def predictions_of(e, regionset):
    return {m: f"results/{e}/predictions/{m}_{regionset}_test.h5" for m in EVAL_MODELS}


def report_figures_json(e):
    """The metrics table, a counts scatter per region set, the example regions (the 3 test
    peaks with the highest observed counts) and the table of qc-combined's checks."""
    d = report_dir(e)
    test = ", ".join(EXPERIMENTS[e]["splits"]["test"])
    figures = [
        {
            "figure": "metrics-table",
            "metrics": [f"results/{e}/metrics/{r}_test.json" for r in REGION_SETS],
            "caption": f"{e}: test chromosomes {test}",
            "output": f"{d}/metrics.html",
        }
    ]
    for r in REGION_SETS:
        figures.append(
            {
                "figure": "counts-scatter",
                "data": dataset_h5(e, r, "test"),
                "predictions": predictions_of(e, r),
                "region-set": r,
                "output": f"{d}/counts_{r}.png",
            }
        )
    figures.append(
        {
            "figure": "example-regions",
            "data": dataset_h5(e, "peaks", "test"),
            "predictions": predictions_of(e, "peaks"),
            "num": 3,
            "output": f"{d}/examples_peaks.png",
        }
    )
    figures.append({"figure": "qc-table", "qc": [qc_json(e, "bias"), qc_json(e, "combined")], "output": f"{d}/qc.html"})
    return {"figures": figures}


def report_footprints_json(e):
    d, fp = report_dir(e), footprints_prefix(e)
    return {
        "figures": [
            {"figure": "footprints-table", "footprints": f"{fp}.json", "output": f"{d}/footprints.html"},
            {"figure": "footprints-plot", "footprints": f"{fp}.json", "output": f"{d}/footprints.png"},
        ]
    }


def report_outputs(e):
    """The report's figures and tables of experiment e."""
    d = report_dir(e)
    outs = [f"{d}/metrics.html", f"{d}/examples_peaks.png", f"{d}/qc.html"]
    outs += [f"{d}/counts_{r}.png" for r in REGION_SETS]
    if footprint_motifs(e) is not None:
        outs += [f"{footprints_prefix(e)}.{x}" for x in ("json", "tsv")]
        outs += [f"{d}/footprints.html", f"{d}/footprints.png"]
    return outs


register_config("report_figures", report_figures_json)
register_config("report_footprints", report_footprints_json)
