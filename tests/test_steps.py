"""The step plumbing: each step's schema (a data file with its defaults) against good and bad
example configs, the command line (`bpflow <step> CONFIG.json --threads N --verbosity L`),
aliases, and steps that never run a model importing no Keras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpflow import schemas
from bpflow.cli import COMMANDS
from bpflow.cli import main as cli
from bpflow.utils import BpflowError

EXAMPLES = Path(__file__).resolve().parent / "schema_examples"
STEPS_WITH_CONFIG = sorted(set(COMMANDS) - {"length-calc", "inspect-data"})


def test_every_config_step_has_a_schema_and_examples():
    assert schemas.steps() == STEPS_WITH_CONFIG
    assert sorted(p.stem for p in EXAMPLES.glob("*.json")) == STEPS_WITH_CONFIG


@pytest.mark.parametrize("step", STEPS_WITH_CONFIG)
def test_schema_examples(step):
    """Good examples pass and get the schema's defaults filled in (the values listed under
    "filled*"); each bad example fails with its one-line message naming the key."""
    examples = json.loads((EXAMPLES / f"{step}.json").read_text())
    for good in examples["good"]:
        filled = schemas.validate(good, step, "x.json")
        assert {k: filled[k] for k in examples.get("filled", {})} == examples.get("filled", {})
        if "filled-settings" in examples:
            s = examples["filled-settings"]
            assert {k: filled["settings"][k] for k in s} == s
        if "filled-head" in examples:
            h = examples["filled-head"]
            assert {k: filled["heads"][0][k] for k in h} == h
        if "filled-figure" in examples:
            f = examples["filled-figure"]
            assert {k: filled["figures"][0][k] for k in f} == f
            assert "head" not in filled["figures"][1]  # defaults of the branch the figure selects only
        for key, value in good.items():  # given keys are kept as given
            if not isinstance(value, (dict, list)):
                assert filled[key] == value
        assert good == json.loads(json.dumps(good))  # the input itself is not changed
    for bad, message in examples["bad"]:
        with pytest.raises(BpflowError) as err:
            schemas.validate(bad, step, "x.json")
        text = str(err.value)
        assert text.startswith("x.json: key ") and message in text and "\n" not in text, text


def test_defaults_of_a_step_are_in_its_schema_only():
    """A default given in the schema is what the step uses: prepare-data writes gzip level 4
    unless told otherwise (no default dict beside the schema to disagree with it)."""
    props = schemas.load_schema("prepare-data")["properties"]
    assert props["compression-level"]["default"] == 4
    assert props["num-threads"]["default"] == 1 and props["verbosity"]["default"] == "INFO"
    # a shared fragment is inlined where it is used
    assert schemas.load_schema("train-bias")["properties"]["settings"]["properties"]["seed"]["default"] == 1234


def test_run_options_override_the_config(tmp_path, caplog):
    """--threads replaces the config's num-threads and --verbosity its verbosity; both are
    checked by the parser."""
    from data_helpers import write_bed, write_bigwig, write_fasta

    genome = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 10})
    bw = write_bigwig(tmp_path / "p.bw", {"chr1": 40}, {"chr1": [1.0] * 40})
    cfg = {
        "genome": str(genome),
        "input-length": 8,
        "output-length": 4,
        "max-jitter": 0,
        "regions": str(write_bed(tmp_path / "r.bed", [("chr1", 10, 14), ("chr1", 20, 24)])),
        "output-h5": str(tmp_path / "d.h5"),
        "heads": [{"bigwig-files": [str(bw)]}],
        "num-threads": 1,
        "verbosity": "ERROR",
    }
    (tmp_path / "d.json").write_text(json.dumps(cfg))
    assert cli(["prepare-data", str(tmp_path / "d.json"), "--threads", "2", "--verbosity", "info"]) == 0
    assert "2 thread(s)" in caplog.text  # INFO records despite the config's ERROR
    caplog.clear()
    assert cli(["prepare-data", str(tmp_path / "d.json")]) == 0
    assert caplog.text == ""  # the config's ERROR level
    for bad in (["--threads", "0"], ["--verbosity", "LOUD"]):
        with pytest.raises(SystemExit):
            cli(["prepare-data", str(tmp_path / "d.json"), *bad])


def test_train_solo_is_an_alias_of_train_bias(tmp_path, capsys):
    (tmp_path / "c.json").write_text("{}")
    assert cli(["train-solo", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"bpflow train-solo: error: {tmp_path / 'c.json'}: key (top level): 'settings' is a required property"
    ]
    assert cli(["--help"]) == 0
    assert "train-solo = train-bias" in capsys.readouterr().out


MODEL_FREE_STEPS = [
    "simulate",
    "prepare-regions",
    "prepare-data",
    "inspect-data",
    "predictions-to-bigwig",
    "metrics",
    "report-figures",
    "motifs",
]


def test_steps_that_run_no_model_import_no_keras():
    """Importing a data step's module (what `bpflow <step>` does) imports neither Keras nor
    TensorFlow; `import bpflow` still registers the custom layers once Keras is imported."""
    modules = [COMMANDS[s][0] for s in MODEL_FREE_STEPS]
    code = (
        f"import sys, importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
        "heavy = sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "import keras\n"
        "assert keras.saving.get_registered_object('bpflow>CenterCrop1D') is not None\n"
        "assert keras.saving.get_registered_object('bpflow>MultinomialNLL') is not None\n"
        "print('ok')\n"
    )
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_python_dash_m_bpflow_is_the_command(tmp_path):
    """`python -m bpflow` (no console script: a package on PYTHONPATH, as on the device machine)
    runs the same CLI: its version, and a bad step's exit status 2 with the usage."""
    import bpflow

    run = [sys.executable, "-m", "bpflow"]
    proc = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == bpflow.__version__, proc.stderr
    proc = subprocess.run([*run, "no-such-step"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown step 'no-such-step'" in proc.stderr + proc.stdout


def test_training_under_jax_does_not_import_tensorflow(tmp_path):
    """A bias model trained under JAX never imports TensorFlow (Keras's own seeding would,
    whenever it is installed: ~0.5 GB and seconds of start-up for nothing), and the seed still
    makes the run repeatable."""
    pytest.importorskip("jax")
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import numpy as np\n"
        "import train_helpers as th\n"
        "from bpflow.train import steps as training\n"
        f"tmp = {str(tmp_path)!r}\n"
        "size = th.needed(th.BIAS_ARCH)\n"
        "train = th.synthetic_h5(tmp + '/t.h5', 16, size, seed=1)\n"
        "val = th.synthetic_h5(tmp + '/v.h5', 8, size, jitter=0, seed=2)\n"
        "runs = [training.train_solo(th.solo_config(tmp, train, val, prefix=p, epochs=2))['history']['val_loss']"
        " for p in ('a', 'b')]\n"
        "assert runs[0] == runs[1], runs\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


@pytest.mark.parametrize(
    "first",
    [
        "import bpflow.layers",
        "import bpflow.losses",
        "import bpflow.models",
        "import keras; import bpflow",
        "import bpflow; import keras",
    ],
)
def test_custom_objects_are_registered_whatever_is_imported_first(first):
    """`import bpflow` registers the layers and losses once Keras is imported, whichever of
    bpflow's modules or Keras comes first (no circular import on the way)."""
    code = (
        f"{first}\nimport keras\n"
        "assert keras.saving.get_registered_object('bpflow>CenterCrop1D') is not None\n"
        "assert keras.saving.get_registered_object('bpflow>MultinomialNLL') is not None\n"
    )
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
