"""Bad workflow configs and step configs: a short error naming the file, key and line, a
non-zero exit, and no job run.  Dry runs and config parsing only (fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

# a small valid experiment (the CI simulation: nothing needs to exist for a dry run)
CI_EXPERIMENT = """\
    simulate: {preset: ci, seed: SEED}
    heads:
      - head-name: nexus
    splits: {train: [chr1], val: [chr2], test: [chr3]}
"""


def snakemake_dry_run(workdir: Path, configfile: Path) -> subprocess.CompletedProcess:
    """`snakemake -n` as a user runs it; stdout and stderr together in .stdout."""
    return subprocess.run(
        [str(SNAKEMAKE), "-n", "--configfile", str(configfile), "-d", str(workdir), "-s", str(SNAKEFILE)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def api_dry_run(workdir: Path, configfiles: list[Path]) -> None:
    """A dry run through Snakemake's Python API (faster than a subprocess; errors raise)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

    with SnakemakeApi(OutputSettings(dryrun=True, quiet={Quietness.ALL})) as api:
        wf = api.workflow(
            snakefile=SNAKEFILE,
            workdir=workdir,
            config_settings=ConfigSettings(configfiles=configfiles),
            resource_settings=ResourceSettings(cores=1),
        )
        wf.dag(DAGSettings()).execute_workflow(executor="dryrun")


def config_error(workdir: Path, text: str, name: str = "config.yaml") -> str:
    """The message of the WorkflowError a config stops the workflow with."""
    from snakemake.exceptions import WorkflowError

    path = workdir / name
    path.write_text(text)
    with pytest.raises(WorkflowError) as err:
        api_dry_run(workdir, [path])
    assert not (workdir / "results").exists()
    return str(err.value)


def experiment(seed: int = 0) -> str:
    return CI_EXPERIMENT.replace("SEED", str(seed))


# ------------------------------------------------------------------------------------------
# Item 3: repeated keys are refused (YAML configs of the workflow, JSON configs of the steps)


def test_repeated_experiment_name_stops_the_run(tmp_path):
    """A copied experiment block not renamed: YAML would keep only the second one."""
    cfgfile = tmp_path / "two.yaml"
    cfgfile.write_text(f"experiments:\n  demo:\n{experiment(0)}  demo:\n{experiment(1)}")
    proc = snakemake_dry_run(tmp_path, cfgfile)
    assert proc.returncode != 0, proc.stdout
    assert f"{cfgfile}: key 'demo' appears twice in experiments (lines 2 and 7)" in proc.stdout, proc.stdout
    assert "Building DAG" not in proc.stdout and "Job stats" not in proc.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        # deep inside an experiment
        (
            f"experiments:\n  demo:\n{experiment()}    max-jitter: 8\n    max-jitter: 16\n",
            "key 'max-jitter' appears twice in experiments/demo (lines 7 and 8)",
        ),
        # inside a list item
        (
            "experiments:\n  demo:\n    simulate: {preset: ci}\n    heads:\n      - head-name: a\n"
            "        head-name: b\n    splits: {train: [chr1], val: [chr2], test: [chr3]}\n",
            "key 'head-name' appears twice in experiments/demo/heads/0 (lines 5 and 6)",
        ),
        # at the top level
        (
            f"evaluate: true\nexperiments:\n  demo:\n{experiment()}evaluate: false\n",
            "key 'evaluate' appears twice in the top level (lines 1 and 8)",
        ),
        # in a flow mapping
        (
            f"experiments:\n  demo:\n{experiment()}    training: {{bias: {{epochs: 2, epochs: 3}}}}\n",
            "key 'epochs' appears twice in experiments/demo/training/bias (lines 7 and 7)",
        ),
    ],
)
def test_repeated_key_at_any_depth_is_refused(tmp_path, text, message):
    assert message in config_error(tmp_path, text)


def test_repeated_key_in_a_json_workflow_config(tmp_path):
    text = json.dumps({"experiments": {"demo": {}}}).replace('{"demo": {}}', '{"demo": {}, "demo": {}}')
    message = config_error(tmp_path, text, name="config.json")
    assert "config.json: key 'demo' appears twice in experiments (lines 1 and 1)" in message


def test_yaml_merge_keys_are_not_repeats(tmp_path):
    """`<<: *anchor` followed by an override of a merged key is ordinary YAML, not a repeat."""
    cfgfile = tmp_path / "merge.yaml"
    cfgfile.write_text(
        "experiments:\n"
        "  a: &base\n" + experiment(0) + "  b:\n    <<: *base\n    simulate: {preset: ci, seed: 1}\nevaluate: false\n"
    )
    api_dry_run(tmp_path, [cfgfile])


def test_step_json_with_a_repeated_key(tmp_path, capsys):
    from bpflow.cli import main

    cfg = tmp_path / "simulate.json"
    cfg.write_text('{\n  "preset": "ci",\n  "seed": 0,\n  "output-dir": "out",\n  "seed": 1\n}\n')
    assert main(["simulate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: key 'seed' is given twice in one JSON object (it appears on lines 3, 5)" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_load_json_config_refuses_repeats_in_nested_objects(tmp_path):
    from bpflow.utils import BpflowError, load_json_config

    cfg = tmp_path / "c.json"
    cfg.write_text('{"heads": [{"head-name": "a", "bigwig-files": [], "head-name": "b"}]}')
    with pytest.raises(BpflowError, match=r"c\.json: key 'head-name' is given twice"):
        load_json_config(cfg)
    # the same key in two different objects is fine
    cfg.write_text('{"a": {"seed": 1}, "b": {"seed": 2}}')
    assert load_json_config(cfg) == {"a": {"seed": 1}, "b": {"seed": 2}}


# ------------------------------------------------------------------------------------------
# Item 10: a schema error is a few lines naming the key path, file and line (was ~500 lines)


def test_schema_error_is_short_and_names_the_key_path(tmp_path):
    demo = (REPO / "config" / "config.yaml").read_text()
    assert "        epochs: 20\n" in demo
    cfgfile = tmp_path / "bad.yaml"
    cfgfile.write_text(demo.replace("        epochs: 20\n", "        epochs: many\n"))
    line = demo.splitlines().index("        epochs: 20") + 1
    proc = snakemake_dry_run(tmp_path, cfgfile)
    assert proc.returncode != 0, proc.stdout
    expected = f"experiments/demo/training/bias/epochs: 'many' is not of type 'integer' ({cfgfile}, line {line})"
    assert expected in proc.stdout, proc.stdout
    assert len(proc.stdout.splitlines()) < 15, proc.stdout
    assert "schema[" not in proc.stdout and "On instance" not in proc.stdout
    assert not (tmp_path / "results").exists()


def test_unknown_top_level_key_is_short(tmp_path):
    """An unknown top-level key used to print the whole schema and config (856 lines)."""
    demo = (REPO / "config" / "config.yaml").read_text()
    cfgfile = tmp_path / "bad.yaml"
    cfgfile.write_text(demo.replace("evaluate: true", "evalute: true"))
    proc = snakemake_dry_run(tmp_path, cfgfile)
    assert proc.returncode != 0
    assert "top level: Additional properties are not allowed ('evalute' was unexpected); did you mean 'evaluate'?" in (
        proc.stdout
    )
    assert len(proc.stdout.splitlines()) < 15, proc.stdout


@pytest.mark.parametrize(
    "text, message",
    [
        # a typo in an experiment block (additionalProperties: false at every level)
        (
            f"experiments:\n  demo:\n{experiment()}    training:\n      bias: {{epoch: 3}}\n",
            "experiments/demo/training/bias: Additional properties are not allowed ('epoch' was unexpected); "
            "did you mean 'epochs'? (CONFIG, line 8)",
        ),
        # the same typo in defaults: the experiment's error points at defaults
        (
            f"defaults:\n  training:\n    combined: {{epoch: 3}}\nexperiments:\n  demo:\n{experiment()}",
            "experiments/demo/training/combined: Additional properties are not allowed ('epoch' was unexpected); "
            "did you mean 'epochs'? (CONFIG, line 3, in defaults)",
        ),
        # a value out of the bounds the step's schema has (refused when planning, not in the job)
        (
            f"experiments:\n  demo:\n{experiment()}    training:\n      combined: {{learning-rate: 5}}\n",
            "experiments/demo/training/combined/learning-rate: 5 is greater than the maximum of 1 (CONFIG, line 8)",
        ),
        # experiments as a list, an empty experiment, a block that is not a mapping
        (f"experiments:\n  - demo:\n{experiment()}", "experiments: expected a mapping, got a list (CONFIG, line 1)"),
        (
            "experiments:\n  demo:\n",
            "experiments/demo: expected a mapping, got nothing (an empty value) (CONFIG, line 2)",
        ),
        (
            f"experiments:\n  demo:\n{experiment()}resources: 5\n",
            "resources: 5 is not of type 'object' (CONFIG, line 7)",
        ),
        # a value in a list
        (
            f"experiments:\n  demo:\n{experiment()}".replace("[chr1]", "[chr1, 7]"),
            "experiments/demo/splits/train/1: 7 is not of type 'string' (CONFIG, line 6)",
        ),
        # a cross-key rule checked after the schema also names the file and line
        (
            f"experiments:\n  demo:\n{experiment()}".replace("val: [chr2]", "val: [chr1]"),
            "experiments/demo/splits: chromosome(s) chr1 in both train and val (CONFIG, line 6)",
        ),
    ],
)
def test_schema_errors_name_key_file_and_line(tmp_path, text, message):
    got = config_error(tmp_path, text)
    assert message.replace("CONFIG", str(tmp_path / "config.yaml")) in got
    assert len(got.splitlines()) == 1


# ------------------------------------------------------------------------------------------
# The same class of mistake: an input file that does not exist is named at planning time with
# its experiment and key (not as a rule's missing input)


def test_missing_input_files_name_experiment_and_key(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    for name in ("genome.fa", "plus.bw", "background.bed"):
        (user / name).write_text("")
    cfg = {
        "experiments": {
            "chip": {
                "genome": str(user / "genome.fa"),
                "peaks": str(user / "peaks.bed"),  # missing
                "heads": [{"head-name": "h", "bigwigs": [str(user / "plus.bw"), "user/minus.bw"]}],  # relative, missing
                "bias-source": "bed",
                "background-bed": "user/background.bed",  # relative to the working directory: exists
                "splits": {"train": ["chr1"], "val": ["chr2"], "test": ["chr3"]},
                "footprints": {"motifs": {"ctcf": {"file": "motifs/ctcf.meme"}}},  # missing
            },
            "sim": {"simulate": {"preset": "ci"}, "heads": [{"head-name": "n"}], "splits": cfg_splits()},
        },
        "evaluate": True,
    }
    message = config_error(tmp_path, yaml.safe_dump(cfg, sort_keys=False))
    cfgfile = tmp_path / "config.yaml"
    lines = message.splitlines()
    assert lines[0] == "config: 3 input file(s) not found:", message
    assert any(f"experiments/chip/peaks: {user / 'peaks.bed'} ({cfgfile}, line" in li for li in lines)
    assert any(f"experiments/chip/heads/0/bigwigs/1: user/minus.bw ({cfgfile}, line" in li for li in lines)
    assert any("experiments/chip/footprints/motifs/ctcf/file: motifs/ctcf.meme" in li for li in lines)
    # existing files, and the simulated inputs of experiment sim (made by the workflow), are not named
    assert "genome" not in message and "background" not in message and "experiments/sim" not in message


def cfg_splits() -> dict:
    return {"train": ["chr1"], "val": ["chr2"], "test": ["chr3"]}
