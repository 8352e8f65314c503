# Config loading and checks, paths, and the one rule that writes every step's JSON config.
# Each stage's JSON builders live in that stage's .smk and register here (STEP_CONFIGS).
#
# Parse time must stay fast (`snakemake -n` of many experiments in seconds): nothing here
# imports bpflow.  The one length formula the workflow needs is copied from
# bpflow/lengths.py; tests/test_workflow.py checks the copy against the original.

import copy
import json
import os
import re
import sys

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
    return output_length + (input_filter_width - 1) + (2 ** (layers + 2) - 4) + (output_filter_width - 1)


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


# training keys of the bias and combined stages (bpflow.train.recipes: counts-schedule)
COUNTS_SCHEDULE_KEYS = (
    "counts-schedule",
    "counts-phase-trainable",
    "counts-phase-learning-rate",
    "counts-phase-epochs",
)


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
    lb = needed_input_length(
        out, bias_arch["layers"], bias_arch["input-filter-width"], bias_arch["output-filter-width"]
    )
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
    return f"results/{e}/models/{stage}.keras"


def qc_json(e, stage):
    """The quality checks of experiment e's bias or combined model (qc-bias, qc-combined)."""
    return f"results/{e}/qc/{stage}.json"


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
        outs += [qc_json(e, "bias"), qc_json(e, "combined")]
        if config["evaluate"]:
            outs += evaluation_outputs(e)
    return outs


def qc_warnings():
    """The warnings of every quality-check report written so far, prefixed with the
    experiment's name (the end-of-run summary; the reports: docs/qc.md)."""
    lines = []
    for e in EXPERIMENTS:
        for stage in ("bias", "combined"):
            path = qc_json(e, stage)
            if os.path.isfile(path):
                with open(path) as fh:
                    lines += [f"{e}: {w}" for w in json.load(fh).get("warnings", [])]
    return lines


def print_qc_summary():
    """Print the QC warnings at the end of a run (they are also in each qc_* job's log, the
    qc/*.json files and the report)."""
    lines = qc_warnings()
    if lines:
        print("\nbpflow QC WARNINGS (results/<experiment>/qc/*.json):", file=sys.stderr)
        for line in lines:
            print(f"  - {line}", file=sys.stderr)
    elif any(os.path.isfile(qc_json(e, s)) for e in EXPERIMENTS for s in ("bias", "combined")):
        print("\nbpflow QC: no warnings", file=sys.stderr)


def json_text(obj):
    return f"{json.dumps(obj, indent=2, sort_keys=True)}\n"


def write_text(path, text):
    """Write atomically: a killed job never leaves a half-written config behind."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------
# Step configs: results/<experiment>/configs/<name>.json, one rule for all of them.  A
# stage registers a builder per kind of name, e.g. register_config(r"data_(?P<dataset>..)",
# data_json); the builder gets the experiment and the pattern's named groups.  Run-time
# settings (verbosity, threads) are not in these files: they travel on each step's command
# line, so changing them reruns nothing.

STEP_CONFIGS = []


def register_config(pattern, builder):
    STEP_CONFIGS.append((re.compile(pattern), builder))


def step_config(e, name):
    for pattern, builder in STEP_CONFIGS:
        match = pattern.fullmatch(name)
        if match:
            return builder(e, **match.groupdict())
    raise WorkflowError(f"no step config is named {name}")


def step_config_file(e, name):
    return f"results/{e}/configs/{name}.json"


# the command-line options of every step job: how to run, not what to compute.  The log level
# travels as a resource: unlike a param, a changed resource reruns no job.
RUN_OPTIONS = "--threads {threads} --verbosity {resources.verbosity}"
