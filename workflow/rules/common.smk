# Config loading and checks, paths, and the one rule that writes every step's JSON config.
# Each stage's JSON builders live in that stage's .smk and register here (STEP_CONFIGS).
#
# Parse time must stay fast (`snakemake -n` of many experiments in seconds): nothing here
# imports bpflow.  The one length formula the workflow needs is copied from
# bpflow/lengths.py; tests/test_workflow.py checks the copy against the original.

import copy
import difflib
import json
import os
import re
import sys

import yaml
from snakemake.exceptions import WorkflowError

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
    """Stop with a config error; a message starting with a key path (experiments/x/splits: ...)
    also gets the file and line that set it."""
    match = re.match(r"(experiments/[^\s:]+)", message)
    if match and "\n" not in message:
        at = match.group(1).split("/")
        at = [int(p) if at[i - 1] == "heads" and p.isdigit() else p for i, p in enumerate(at)]
        message += config_location(at)
    raise WorkflowError(f"config: {message}")


# ----------------------------------------------------------------------------------------
# The config files, re-read: Snakemake's YAML loader keeps the last of a repeated key (a
# copied experiment block left unrenamed silently replaced the first), so each file Snakemake
# read is composed again here and a key repeated in one mapping stops the run.  The same pass
# records the line of every key, so that errors can name the file and line.

YAML_MERGE_TAG = "tag:yaml.org,2002:merge"


class _RepeatedJsonKey(Exception):
    pass


def _refuse_repeated_json_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedJsonKey(key)
        out[key] = value
    return out


def _yaml_key(loader, node):
    """A mapping key as YAML reads it (`1` and `'1'` differ, `a` and `"a"` do not)."""
    try:
        key = loader.construct_object(node, deep=True)
        hash(key)
        return key
    except Exception:
        return (node.tag, id(node))


def _where(path):
    return "/".join(str(p) for p in path)


def index_config_file(file):
    """{key path: line} of a config file; a key repeated in one mapping (at any depth) is an
    error naming the file, the key and both lines."""
    with open(file, encoding="utf-8") as fh:
        text = fh.read()
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError:
        root = None  # read by Snakemake as JSON PyYAML cannot parse (e.g. tab indents)
    if root is None:
        try:
            json.loads(text, object_pairs_hook=_refuse_repeated_json_keys)
        except _RepeatedJsonKey as dup:
            _fail(f"{file}: key {dup.args[0]!r} is given twice in one JSON object; give each key once")
        except ValueError:
            pass
        return {}
    if isinstance(root, yaml.MappingNode) and any(k.value == "__use_yte__" for k, _ in root.value):
        return {}  # a YTE template: its ?if / ?else keys repeat by design
    lines, repeated, visited = {}, [], set()
    todo = [(root, ())]
    while todo:
        node, path = todo.pop()
        if id(node) in visited:  # an alias of a node already read
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, value_node in node.value:
                if key_node.tag == YAML_MERGE_TAG:  # `<<: *anchor`: its keys merge in here
                    todo.append((value_node, path))
                    continue
                key, line = _yaml_key(loader, key_node), key_node.start_mark.line + 1
                if key in first:
                    repeated.append((first[key], line, key, path))
                    continue
                first[key] = line
                lines[path + (key,)] = line
                todo.append((value_node, path + (key,)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                todo.append((item, path + (i,)))
    loader.dispose()
    if repeated:
        line1, line2, key, parent = min(repeated, key=lambda r: r[1])
        more = f" ({len(repeated) - 1} more repeated key(s) after it)" if len(repeated) > 1 else ""
        _fail(
            f"{file}: key {key!r} appears twice in {_where(parent) or 'the top level'} (lines {line1} and "
            f"{line2}); YAML would keep only the last, so rename or remove one{more}"
        )
    return lines


def index_config_files(paths):
    """[(file, {key path: line})] of the config files Snakemake read, in its order."""
    return [(str(p), index_config_file(p)) for p in paths]


CONFIG_LINES = []  # filled by the first check below


def config_location(path):
    """' (file, line N)' of a key path in the config files (the last file that sets it wins,
    as when Snakemake merges them); keys an experiment takes from `defaults` are looked up
    there.  '' where no file sets it."""
    path = tuple(path)
    candidates = [(path, "")]
    if len(path) > 2 and path[0] == "experiments":
        candidates.append((("defaults",) + path[2:], ", in defaults"))
    for key_path, note in candidates:
        for file, lines in reversed(CONFIG_LINES):
            if key_path in lines:
                return f" ({file}, line {lines[key_path]}{note})"
    return ""


# ----------------------------------------------------------------------------------------
# Schema validation: jsonschema's most relevant error as one line (key path, message, file and
# line), not the schema and config dump of snakemake.utils.validate.


def _config_validator():
    """A Draft 2020-12 validator of workflow/schemas/config.schema.yaml that fills in the
    schema's defaults (inside objects that exist; see the notes at the top of the schema)."""
    from jsonschema import Draft202012Validator, validators

    with open(os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")) as fh:
        schema = yaml.safe_load(fh)
    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": fill_defaults})(schema)


JSON_KINDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer"}


def _kind(value):
    """What a None, dict or list value is, in the config's words (not its whole repr)."""
    return "nothing (an empty value)" if value is None else "a mapping" if isinstance(value, dict) else "a list"


def schema_error_message(err):
    """One line: the key path, jsonschema's message (big values summarised), file and line."""
    path = list(err.absolute_path)
    message, at = err.message, path
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = list(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in known]
        if extra:
            at = path + [extra[0]]
            close = difflib.get_close_matches(str(extra[0]), known, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
    elif err.validator == "type" and (err.instance is None or isinstance(err.instance, (dict, list))):
        types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        message = f"expected {' or '.join(JSON_KINDS.get(t, t) for t in types)}, got {_kind(err.instance)}"
    if len(message) > 300:
        message = message[:300] + " ..."
    return f"{_where(path) or 'top level'}: {message}{config_location(at)}"


def validate_config(config):
    """Check the config against the schema, filling in defaults; stop at the most relevant error."""
    from jsonschema.exceptions import best_match

    error = best_match(_config_validator().iter_errors(config))
    if error is not None:
        raise WorkflowError(f"config: {schema_error_message(error)}")


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


def simulation_truth(e):
    """truth.json of experiment e's simulation, or None for an experiment on real data."""
    sim = EXPERIMENTS[e].get("simulate")
    return None if sim is None else simulated_files(sim["name"])["truth"]


# training keys of the bias and combined stages (bpflow.train.recipes: counts-schedule)
COUNTS_SCHEDULE_KEYS = (
    "counts-schedule",
    "counts-phase-trainable",
    "counts-phase-learning-rate",
    "counts-phase-schedule",
    "counts-phase-epochs",
    "profile-phase-stop-delta",
    "profile-phase-patience-after-halving",
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
    if tr["combined"]["counts-schedule"] == "profile-first":
        # the counts phase on a cosine from 0.0008 to 0 (at a held rate its validation loss moved
        # 1-15 % epoch to epoch and its last epoch could be its best: "still improving"); held,
        # it keeps 0.0004 (at 0.0008 held, base's residual blurred on the quality suite)
        comb = tr["combined"]
        comb.setdefault("counts-phase-schedule", "cosine")
        comb.setdefault("counts-phase-learning-rate", 0.0008 if comb["counts-phase-schedule"] == "cosine" else 0.0004)
        # once the profile phase's rate is halved, its gains are a few tenths of a nat a window
        # and the counts phase (every weight, at a tenth of the rate) settles what it would
        comb.setdefault("profile-phase-patience-after-halving", 2)


def _missing_inputs(name, exp):
    """[(key path, file)] of the input files an experiment names that do not exist (read
    before the simulated defaults are filled in; results/simulated/ is written by the workflow)."""
    named = [((key,), exp[key]) for key in ("genome", "peaks", "blacklist", "background-bed") if key in exp]
    for i, head in enumerate(exp["heads"]):
        for key in ("bigwigs", "control-bigwigs"):
            named += [(("heads", i, key, j), f) for j, f in enumerate(head.get(key, []))]
    fp = exp["footprints"]
    motifs = [(("footprints", "motifs", m), v) for m, v in (fp.get("motifs") or {}).items()]
    motifs += [(("footprints", "bias-motif"), fp["bias-motif"])] if "bias-motif" in fp else []
    named += [(at + ("file",), v["file"]) for at, v in motifs if isinstance(v, dict) and "file" in v]
    simulated = os.path.abspath(SIMULATED_DIR) + os.sep
    return [
        (("experiments", name) + at, f)
        for at, f in named
        if not os.path.exists(f) and not os.path.abspath(f).startswith(simulated)
    ]


def load_experiments(config):
    """Merge defaults, validate against the schema (filling defaults), check, return them."""
    raw = config.get("experiments")
    if isinstance(raw, dict) and isinstance(config.get("defaults", {}), dict):
        config["experiments"] = {
            name: deep_merge(config.get("defaults", {}), exp) if isinstance(exp, dict) else exp
            for name, exp in raw.items()
        }
    validate_config(config)
    experiments = {name: copy.deepcopy(exp) for name, exp in config["experiments"].items()}
    if "simulated" in experiments:
        _fail("experiments: the name 'simulated' is reserved (results/simulated/ holds simulations)")
    missing = [m for name, exp in experiments.items() for m in _missing_inputs(name, exp)]
    if missing:
        shown = [f"  {_where(at)}: {f}{config_location(at)}" for at, f in missing[:10]]
        shown += [f"  ... and {len(missing) - 10} more"] if len(missing) > 10 else []
        _fail(f"{len(missing)} input file(s) not found:\n" + "\n".join(shown))
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


try:
    CONFIG_LINES = index_config_files(workflow.configfiles)
    EXPERIMENTS, SIMULATIONS = load_experiments(config)
except WorkflowError as err:
    # raised again here, so Snakemake prints the message and one traceback line
    raise WorkflowError(str(err)) from None
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
        outs += interpret_outputs(e)  # empty unless interpret.enabled
    return outs


def qc_warnings():
    """The warnings of every quality-check report written so far, prefixed with the
    experiment's name (the end-of-run summary; the reports: docs/qc.md)."""
    lines = []
    for e in EXPERIMENTS:
        # the motifs jobs this config plans (configs/interpret.smk), not stale files of another
        motifs = [motifs_qc_json(e, *job) for job in motifs_jobs(e)]
        for path in [qc_json(e, "bias"), qc_json(e, "combined"), *motifs]:
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
# the steps that run a model also take the Keras backend (config key `backend`)
MODEL_RUN_OPTIONS = RUN_OPTIONS + " --backend {resources.backend}"
