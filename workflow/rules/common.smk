# Config handling and the step-JSON builders shared by every rule.
#
# Parse time must stay fast (`snakemake -n` under 5 s for many experiments): nothing here
# imports bpflow (the package imports Keras).  The one length formula the workflow needs is
# copied from bpflow/lengths.py; tests/test_workflow.py checks the copy against the original.

import copy
import json
import os
import re
import shlex

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

SPLITS = ["train", "val", "test"]
REGION_SETS = ["peaks", "background"]
SIMULATED_DIR = "results/simulated"
# dataset name -> (region set, bigWigs, input length): experiment bigWigs at the residual
# input length (combined model, evaluation), experiment bigWigs at the bias input length
# (bias model on background, transformation), control bigWigs at the bias input length.
DATASETS = {
    "peaks": ("peaks", "bigwigs", "residual"),
    "background": ("background", "bigwigs", "residual"),
    "bias-peaks": ("peaks", "bigwigs", "bias"),
    "bias-background": ("background", "bigwigs", "bias"),
    "control-peaks": ("peaks", "control-bigwigs", "bias"),
}


# ----------------------------------------------------------------------------------------
# Config: defaults merged under every experiment, schema validation (fills defaults), checks


def deep_merge(base, override):
    """A copy of ``base`` with ``override`` merged in (objects recursively, the rest replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def needed_input_length(output_length, layers, input_filter_width, output_filter_width):
    """Input length a BPNet with valid convolutions needs (copy of bpflow.lengths)."""
    return (
        output_length
        + (input_filter_width - 1)
        + (2 ** (layers + 2) - 4)
        + (output_filter_width - 1)
    )


def _fail(message):
    raise WorkflowError(f"config: {message}")


def simulated_files(sim):
    """Paths of what `bpflow simulate` writes into results/simulated/<sim>/."""
    d = f"{SIMULATED_DIR}/{sim}"
    return {
        "genome": f"{d}/genome.fa",
        "fasta-index": f"{d}/genome.fa.fai",
        "peaks": f"{d}/peaks.narrowPeak",
        "experiment": [f"{d}/experiment.plus.bw", f"{d}/experiment.minus.bw"],
        "control": [f"{d}/control.plus.bw", f"{d}/control.minus.bw"],
        "truth": f"{d}/truth.json",
    }


# training keys of the bias and combined stages (bpflow.training: counts-schedule)
COUNTS_SCHEDULE_KEYS = ("counts-schedule", "counts-phase-trainable", "counts-phase-learning-rate")


def _check_experiment(name, exp):
    """Cross-key rules the schema cannot express; fills in simulated inputs and lengths."""
    where = f"experiments/{name}"
    sim = exp.get("simulate")
    if sim is not None:
        sim.setdefault("name", f"{sim['preset']}-seed{sim['seed']}")
        reserved = {"preset", "seed", "output-dir"} & set(sim["options"])
        if reserved:
            _fail(f"{where}/simulate/options: set {', '.join(sorted(reserved))} in the simulate block itself")
        if sim["options"].get("write-control") is False:
            _fail(f"{where}/simulate/options: write-control must stay true (the workflow tracks the control bigWigs)")
        files = simulated_files(sim["name"])
        exp.setdefault("genome", files["genome"])
        exp.setdefault("peaks", files["peaks"])
        for head in exp["heads"]:
            if len(exp["heads"]) > 1 and "bigwigs" not in head:
                _fail(f"{where}: with several heads give each head's bigwigs explicitly")
            head.setdefault("bigwigs", files["experiment"])
            if exp["bias-source"] == "control":
                head.setdefault("control-bigwigs", files["control"])
    for key in ("genome", "peaks"):
        if key not in exp:
            _fail(f"{where}: key {key} is required (or give a simulate block)")
    for i, head in enumerate(exp["heads"]):
        hw = f"{where}/heads/{i} ({head['head-name']})"
        if "bigwigs" not in head:
            _fail(f"{hw}: key bigwigs is required")
        n = len(head["bigwigs"])
        if exp["bias-source"] == "control":
            if "control-bigwigs" not in head:
                _fail(f"{hw}: bias-source is control, so key control-bigwigs is required")
            if len(head["control-bigwigs"]) != n:
                _fail(
                    f"{hw}: control-bigwigs lists {len(head['control-bigwigs'])} file(s) but "
                    f"bigwigs lists {n}; give one control per task"
                )
        order = head["revcomp-task-order"]
        if order == "auto" and n > 2:
            _fail(f"{hw}: revcomp-task-order auto needs 1 or 2 tasks; give the order as a list")
        if order != "auto" and sorted(order) != list(range(n)):
            _fail(f"{hw}: revcomp-task-order {order} is not a permutation of 0..{n - 1}")
    names = [h["head-name"] for h in exp["heads"]]
    if len(set(names)) != len(names):
        _fail(f"{where}: head names repeat ({', '.join(names)})")
    if exp["bias-source"] == "bed" and "background-bed" not in exp:
        _fail(f"{where}: bias-source is bed, so key background-bed is required")
    if exp["bias-source"] != "bed" and "background-bed" in exp:
        _fail(f"{where}: background-bed is only used with bias-source bed")
    split_sets = {s: set(exp["splits"][s]) for s in SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        common = split_sets[a] & split_sets[b]
        if common:
            _fail(f"{where}/splits: chromosome(s) {', '.join(sorted(common))} in both {a} and {b}")

    out = exp["output-length"]
    bias_arch, res_arch = exp["bias-architecture"], exp["residual-architecture"]
    lb = needed_input_length(out, bias_arch["layers"], bias_arch["input-filter-width"], bias_arch["output-filter-width"])
    lr = needed_input_length(out, res_arch["layers"], res_arch["input-filter-width"], res_arch["output-filter-width"])
    if lb > lr:
        _fail(
            f"{where}: the bias model needs input length {lb}, more than the residual model's {lr}; "
            "the bias input is cropped from the residual input, so give the bias model a smaller "
            "receptive field (fewer layers or narrower filters)"
        )
    if (lr - lb) % 2:
        _fail(
            f"{where}: residual input {lr} - bias input {lb} is odd; the bias input must be a "
            "centred crop of the residual input (change a filter width by one)"
        )
    exp["bias-input-length"] = lb
    exp["residual-input-length"] = lr

    tr = exp["training"]
    for key in COUNTS_SCHEDULE_KEYS:
        if key in tr["transformation"]:
            _fail(f"{where}/training/transformation: key {key} applies to the bias and combined stages only")
    for stage in ("bias", "combined"):
        tr[stage].setdefault("counts-schedule", "profile-first")
        if tr[stage]["counts-schedule"] == "joint":
            for key in COUNTS_SCHEDULE_KEYS[1:]:
                if key in tr[stage]:
                    _fail(f"{where}/training/{stage}: key {key} is only used with counts-schedule profile-first")
    if tr["bias"]["counts-schedule"] == "profile-first":
        # the bias model's total is the sum of its per-base rates, which its profile-trained
        # body computes already; keeping the body keeps the bias profile at its best
        tr["bias"].setdefault("counts-phase-trainable", "counts-layers")


def load_experiments(config):
    """Merge defaults, validate against the schema (filling defaults), check, return them."""
    raw = config.get("experiments")
    if isinstance(raw, dict) and isinstance(config.get("defaults", {}), dict):
        config["experiments"] = {
            name: deep_merge(config.get("defaults", {}), exp) if isinstance(exp, dict) else exp
            for name, exp in raw.items()
        }
    validate(config, "../schemas/config.schema.yaml")
    experiments = {name: copy.deepcopy(exp) for name, exp in config["experiments"].items()}
    if "simulated" in experiments:
        _fail("experiments: the name 'simulated' is reserved (results/simulated/ holds simulations)")
    sims = {}
    for name, exp in experiments.items():
        _check_experiment(name, exp)
        sim = exp.get("simulate")
        if sim is not None:
            if sim["name"] in sims and sims[sim["name"]] != sim:
                _fail(
                    f"experiments/{name}/simulate: name {sim['name']} is used by another "
                    "experiment with different settings; give each simulation its own name"
                )
            sims[sim["name"]] = sim
    return experiments, sims


EXPERIMENTS, SIMULATIONS = load_experiments(config)
RES = config["resources"]


def names_regex(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


# Experiments whose peaks run of prepare-regions samples background regions, and those
# that bring their own background BED (a second prepare-regions run splits and filters it).
SAMPLED = names_regex(e for e, x in EXPERIMENTS.items() if x["bias-source"] != "bed")
OWN_BED = names_regex(e for e, x in EXPERIMENTS.items() if x["bias-source"] == "bed")


wildcard_constraints:
    experiment=names_regex(EXPERIMENTS),
    sim="[A-Za-z0-9][A-Za-z0-9_.-]*",
    split="|".join(SPLITS),
    regionset="|".join(REGION_SETS),
    dataset="|".join(DATASETS),


# ----------------------------------------------------------------------------------------
# Paths


def region_bed(e, regionset, split):
    """BED of a region set and split, as `bpflow prepare-regions` names it."""
    if regionset == "peaks":
        return f"results/{e}/regions/peaks_{split}.bed"
    if EXPERIMENTS[e]["bias-source"] == "bed":
        return f"results/{e}/regions/background_{split}.bed"
    return f"results/{e}/regions/peaks_background_{split}.bed"


def dataset_h5(e, dataset, split):
    return f"results/{e}/data/{dataset}_{split}.h5"


def model_prefix(e, stage):
    return f"results/{e}/models/{stage}"


def model_file(e, stage):
    """The saved model of a stage: bias, transformation, combined or residual."""
    if stage in ("combined", "residual"):
        return f"results/{e}/models/combined_{stage}.keras"
    return f"results/{e}/models/{stage}.keras"


def experiment_inputs(e):
    """The genome and every bigWig an experiment reads (for `input:`)."""
    exp = EXPERIMENTS[e]
    files = [exp["genome"]]
    for head in exp["heads"]:
        files += head["bigwigs"] + head.get("control-bigwigs", [])
    return files


def final_outputs():
    outs = []
    for e in EXPERIMENTS:
        outs += [model_file(e, s) for s in ("bias", "transformation", "combined", "residual")]
        if config["evaluate"]:
            outs += evaluation_outputs(e)
    return outs


def json_text(obj):
    return f"{json.dumps(obj, indent=2, sort_keys=True)}\n"


def write_text(path, text):
    """Write atomically: a killed job never leaves a half-written config behind."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------
# Step JSON builders (one per `bpflow <step>`; keys as in each module's JSON schema)


def simulate_json(sim):
    spec = SIMULATIONS[sim]
    cfg = copy.deepcopy(spec["options"])
    cfg.update(
        {
            "preset": spec["preset"],
            "seed": spec["seed"],
            "output-dir": f"{SIMULATED_DIR}/{sim}",
            "verbosity": config["verbosity"],
        }
    )
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


def data_json(e, dataset, split, threads):
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
        "num-threads": threads,
        "verbosity": config["verbosity"],
    }


def regions_json(e, regionset, threads):
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
        "num-threads": threads,
        "verbosity": config["verbosity"],
    }
    cfg.update(opts)
    if regionset == "background":
        cfg["resize-mode"] = "center"
    elif exp["bias-source"] != "bed":
        cfg["background"] = background
    if "blacklist" in exp:
        cfg["blacklist"] = exp["blacklist"]
    return cfg


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
    return {
        "train-data": train,
        "val-data": val,
        "heads": training_heads(e, stage),
        "verbosity": config["verbosity"],
    }


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
    """Extra inputs of fit_transformation: the background datasets of the counts fit."""
    if not transformation_counts_split(e):
        return []
    return [dataset_h5(e, "bias-background", s) for s in ("train", "val")]


def combined_qc_files(e):
    """Extra inputs of train_combined's QC: background sequences and the simulation's truth."""
    files = [dataset_h5(e, "background", "val")]
    sim = EXPERIMENTS[e].get("simulate")
    if sim is not None:
        files.append(simulated_files(sim["name"])["truth"])
    return files


def combined_qc_json(e):
    """The train-combined `qc` block: counts checks on the validation peaks; footprint checks
    with the simulation's motifs (simulate block) and/or the footprints block's motifs."""
    exp = EXPERIMENTS[e]
    opts = exp["training"]["qc"]
    qc = {
        "enabled": opts["enabled"],
        "min-residual-share": opts["min-residual-share"],
        "num-sequences": opts["num-sequences"],
        "max-bias-tf-ratio": opts["max-bias-tf-ratio"],
        "max-residual-bias-ratio": opts["max-residual-bias-ratio"],
        "background-data": dataset_h5(e, "background", "val"),
    }
    sim = exp.get("simulate")
    if sim is not None:
        qc["truth-json"] = simulated_files(sim["name"])["truth"]
    fp = exp.get("footprints", {})
    if fp.get("motifs"):
        qc["motifs"] = copy.deepcopy(fp["motifs"])
    if fp.get("bias-motif"):
        qc["bias-motifs"] = {"bias": copy.deepcopy(fp["bias-motif"])}
    return qc


def train_combined_json(e):
    exp = EXPERIMENTS[e]
    settings = _settings(e, "combined")
    settings["architecture"] = _architecture(e, "residual", exp["residual-input-length"], "residual")
    settings["transformation-model"] = {
        "transformation-model-file": model_file(e, "transformation")
    }
    cfg = {"settings": settings}
    cfg.update(_training_common(e, "combined", stage_data(e, "combined", "train"), stage_data(e, "combined", "val")))
    cfg["qc"] = combined_qc_json(e)
    return cfg


TRAIN_JSON = {
    "bias": train_bias_json,
    "transformation": train_transformation_json,
    "combined": train_combined_json,
}


# Evaluation (workflow/rules/evaluate.smk)

EVAL = RES["evaluation"]
EVAL_MODELS = ["combined", "residual", "bias"]
# the workflow's small adapters around bpflow functions (footprints, report figures)
SCRIPTS = os.path.join(workflow.basedir, "scripts")


def evaluation_model_file(e, model):
    return model_file(e, "transformation" if model == "bias" else model)


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
        "verbosity": config["verbosity"],
    }


def metrics_json(e, regionset):
    return {
        "predictions": {
            m: f"results/{e}/predictions/{m}_{regionset}_test.h5" for m in EVAL_MODELS
        },
        "data": dataset_h5(e, regionset, "test"),
        "region-set": regionset,
        "output-json": f"results/{e}/metrics/{regionset}_test.json",
        "output-tsv": f"results/{e}/metrics/{regionset}_test.tsv",
        "verbosity": config["verbosity"],
    }


def footprint_motifs(e):
    """TF motifs, bias motif and truth.json of an experiment's footprints (config key
    `footprints`; a simulation's truth fills in what is not given), or None without motifs."""
    exp = EXPERIMENTS[e]
    fp = exp["footprints"]
    sim = exp.get("simulate")
    truth = simulated_files(sim["name"])["truth"] if sim is not None else None
    tfs = fp.get("motifs")
    bias = {"bias": fp["bias-motif"]} if "bias-motif" in fp else None
    if truth is None and not tfs and not bias:
        return None
    return {"motifs": tfs, "bias-motifs": bias, "truth": truth if tfs is None or bias is None else None}


def footprint_files(e):
    """Motif files and the truth.json the footprints of experiment e read (for `input:`)."""
    spec = footprint_motifs(e) or {}
    files = [spec["truth"]] if spec.get("truth") else []
    for entries in (spec.get("motifs"), spec.get("bias-motifs")):
        for entry in (entries or {}).values():
            if isinstance(entry, dict) and "file" in entry:
                files.append(entry["file"])
            elif isinstance(entry, str) and os.path.isfile(entry):
                files.append(entry)
    return files


def footprints_json(e):
    exp = EXPERIMENTS[e]
    fp = exp["footprints"]
    spec = footprint_motifs(e)
    if spec is None:
        _fail(f"experiments/{e}: no motif for the footprints (give footprints: motifs or bias-motif)")
    out = f"results/{e}/footprints/footprints"
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
        "output-html": f"{out}.html",
        "output-png": f"{out}.png",
        "verbosity": config["verbosity"],
    }
    for key in ("motifs", "bias-motifs"):
        if spec[key]:
            cfg[key] = copy.deepcopy(spec[key])
    if spec["truth"]:
        cfg["simulation-truth"] = spec["truth"]
    return cfg


def report_outputs(e):
    """The report's figures and tables of experiment e (workflow/rules/report.smk)."""
    outs = [f"results/{e}/report/metrics.html", f"results/{e}/report/examples_peaks.png",
            f"results/{e}/report/qc.html"]
    outs += [f"results/{e}/report/counts_{r}.png" for r in REGION_SETS]
    if footprint_motifs(e) is not None:
        outs += [f"results/{e}/footprints/footprints.{x}" for x in ("json", "tsv", "html", "png")]
    return outs


def prediction_args(e, regionset):
    """`--prediction LABEL=H5` arguments of report_figures.py, in EVAL_MODELS order."""
    return " ".join(
        f"--prediction {m}=results/{e}/predictions/{m}_{regionset}_test.h5"
        for m in EVAL_MODELS
    )


def report_figures_args(e):
    """The report_figures.py command line: the metrics table, a counts scatter per region
    set, the example regions (the 3 test peaks with the highest observed counts) and the
    table of train-combined's quality checks."""
    d = f"results/{e}/report"
    test = ", ".join(EXPERIMENTS[e]["splits"]["test"])
    metrics = " ".join(f"results/{e}/metrics/{r}_test.json" for r in REGION_SETS)
    commands = [
        f"metrics-table --metrics {metrics} "
        f"--caption {shlex.quote(f'{e}: test chromosomes {test}')} -o {d}/metrics.html"
    ]
    for r in REGION_SETS:
        commands.append(
            f"counts-scatter --data {dataset_h5(e, r, 'test')} {prediction_args(e, r)} "
            f"--region-set {r} -o {d}/counts_{r}.png"
        )
    commands.append(
        f"example-regions --data {dataset_h5(e, 'peaks', 'test')} "
        f"{prediction_args(e, 'peaks')} --num 3 -o {d}/examples_peaks.png"
    )
    commands.append(f"qc-table --qc {model_prefix(e, 'combined')}.qc.json -o {d}/qc.html")
    return " + ".join(f"--verbosity {config['verbosity']} {c}" for c in commands)


def evaluation_outputs(e):
    return [f"results/{e}/metrics/{r}_test.tsv" for r in REGION_SETS] + report_outputs(e)
