"""The workflow side of `bpflow contributions` (the `interpret:` block, rule contributions):
dry-run plans with contributions on and off, the step JSON the rule runs with, and bad
interpret values refused at planning with their key path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from test_workflow import ancestors, ci_config, config_name, jobs_by_rule, run_workflow, step_json, write_yaml

CONTRACT_KEYS = {
    "model-file",
    "heads",
    "contribution-heads",
    "targets",
    "genome",
    "regions",
    "max-regions",
    "num-references",
    "seed",
    "batch-size",
    "output-prefix",
    "bigwig",
}
SIM = "results/simulated/ci-seed0"


def interpret_config(interpret: dict | None, heads: list | None = None) -> dict:
    """The CI config without evaluation (a faster plan), with this interpret block."""
    cfg = ci_config()
    cfg["evaluate"] = False
    exp = cfg["experiments"]["ci"]
    if interpret is not None:
        exp["interpret"] = copy.deepcopy(interpret)
    if heads is not None:
        exp["heads"] = heads
    return cfg


def plan(tmp_path: Path, cfg: dict):
    return run_workflow(tmp_path, [write_yaml(tmp_path / "config.yaml", cfg)])


def contribution_configs(dag) -> dict:
    """{config name: step JSON} of the contributions configs of a plan."""
    return {
        config_name(j): step_json(j)
        for j in jobs_by_rule(dag).get("step_config", [])
        if config_name(j).startswith("contributions_")
    }


def check_step_schema(cfg: dict, name: str) -> None:
    """The step's own schema, once bpflow/schemas/contributions.schema.json exists."""
    from bpflow import schemas

    if (Path(schemas.__file__).parent / "contributions.schema.json").is_file():
        schemas.validate(cfg, "contributions", name)


def test_defaults_plan_residual_contributions_on_test_peaks(tmp_path):
    dag = plan(tmp_path, interpret_config({"enabled": True}))
    all_jobs = jobs_by_rule(dag)["contributions"]
    # models [residual] x regions [peaks-test] x 1 head x targets [counts, profile], and the
    # bias model's profile (for the motifs check; test_motifs_plan below)
    assert len(all_jobs) == 3
    jobs = [j for j in all_jobs if "/residual_" in str(j.output.h5)]
    assert len(jobs) == 2
    outputs = sorted(str(f) for j in jobs for f in j.output)
    assert outputs == [
        f"results/ci/interpret/residual_peaks-test.nexus.{t}.{ext}"
        for t in ("counts", "profile")
        for ext in ("bw", "h5")
    ]
    for job in jobs:
        assert job.threads == 2 and job.resources["gpu"] == 1
        assert job.resources["mem_mb"] == 16000 and job.resources["runtime"] == 240
        assert str(job.log[0]).startswith("results/ci/logs/contributions_residual_peaks-test.nexus.")
        assert str(job.benchmark).startswith("results/ci/benchmarks/contributions_")
        assert job.shellcmd.startswith(f"bpflow contributions {job.input.config} --threads 2 --verbosity INFO")
        assert set(map(str, job.input)) >= {
            "results/ci/models/residual.keras",
            "results/ci/data/peaks_test.h5",
            f"{SIM}/genome.fa",
        }
        assert "train_combined" in {a.rule.name for a in ancestors(dag, job)}
    # the `all` target asks for them
    (all_job,) = jobs_by_rule(dag)["all"]
    assert set(outputs) <= set(map(str, all_job.input))

    configs = contribution_configs(dag)
    assert sorted(configs) == [
        "contributions_bias_peaks-test.nexus.profile",
        "contributions_residual_peaks-test.nexus.counts",
        "contributions_residual_peaks-test.nexus.profile",
    ]
    del configs["contributions_bias_peaks-test.nexus.profile"]
    for name, cfg in configs.items():
        assert set(cfg) == CONTRACT_KEYS
        target = name.rsplit(".", 1)[1]
        assert cfg == {
            "model-file": "results/ci/models/residual.keras",
            "heads": [{"head-name": "nexus", "num-tasks": 2}],
            "contribution-heads": ["nexus"],
            "targets": [target],
            "genome": f"{SIM}/genome.fa",
            "regions": {"dataset": "results/ci/data/peaks_test.h5"},
            "max-regions": 500,
            "num-references": 20,
            "seed": 0,
            "batch-size": 8,
            "output-prefix": "results/ci/interpret/residual_peaks-test",
            "bigwig": True,
        }
        check_step_schema(cfg, name)


def test_models_times_region_sets_and_the_options(tmp_path):
    interpret = {
        "enabled": True,
        "models": ["residual", "bias", "combined"],
        "regions": ["peaks-test", "peaks-val"],
        "targets": ["counts"],
        "max-regions": None,
        "num-references": 5,
        "seed": 7,
        "batch-size": 4,
    }
    dag = plan(tmp_path, interpret_config(interpret))
    jobs = jobs_by_rule(dag)["contributions"]
    # models x region sets (1 head, 1 target), plus the bias model's profile (motifs)
    assert len(jobs) == 3 * 2 + 2
    configs = contribution_configs(dag)
    assert len(configs) == 8
    for model in ("residual", "bias", "combined"):
        for regions, split in (("peaks-test", "test"), ("peaks-val", "val")):
            cfg = configs[f"contributions_{model}_{regions}.nexus.counts"]
            assert cfg["model-file"] == f"results/ci/models/{model}.keras"  # bias: the bias solo model
            # every model reads the same windows (the step crops them to the bias model's input)
            assert cfg["regions"] == {"dataset": f"results/ci/data/peaks_{split}.h5"}
            assert cfg["output-prefix"] == f"results/ci/interpret/{model}_{regions}"
            assert (cfg["targets"], cfg["max-regions"], cfg["num-references"]) == (["counts"], None, 5)
            assert (cfg["seed"], cfg["batch-size"]) == (7, 4)
            check_step_schema(cfg, f"contributions_{model}_{regions}")
    datasets = {Path(str(j.output[0])).name for j in jobs_by_rule(dag)["dataset"]}
    assert {"peaks_test.h5", "peaks_val.h5"} <= datasets and "bias-peaks_test.h5" not in datasets


def test_two_heads_and_a_chosen_head(tmp_path):
    heads = [
        {"head-name": "nexus", "bigwigs": [f"{SIM}/experiment.plus.bw", f"{SIM}/experiment.minus.bw"]},
        {"head-name": "plus", "bigwigs": [f"{SIM}/experiment.plus.bw"]},
    ]
    dag = plan(tmp_path, interpret_config({"enabled": True, "motifs": {"enabled": False}}, heads))
    assert len(jobs_by_rule(dag)["contributions"]) == 2 * 2  # heads x targets
    cfg = contribution_configs(dag)["contributions_residual_peaks-test.plus.profile"]
    assert cfg["heads"] == [{"head-name": "nexus", "num-tasks": 2}, {"head-name": "plus", "num-tasks": 1}]
    assert cfg["contribution-heads"] == ["plus"] and cfg["targets"] == ["profile"]

    dag = plan(tmp_path, interpret_config({"enabled": True, "heads": ["plus"], "motifs": {"enabled": False}}, heads))
    outputs = sorted(Path(str(j.output.h5)).name for j in jobs_by_rule(dag)["contributions"])
    assert outputs == ["residual_peaks-test.plus.counts.h5", "residual_peaks-test.plus.profile.h5"]


@pytest.mark.parametrize("interpret", [None, {}, {"enabled": False, "models": ["bias"]}])
def test_disabled_plans_no_contributions(tmp_path, interpret):
    dag = plan(tmp_path, interpret_config(interpret))
    assert "contributions" not in jobs_by_rule(dag) and "motifs" not in jobs_by_rule(dag)
    assert not contribution_configs(dag)
    assert not any("/interpret/" in str(f) for j in dag.jobs for f in j.output)


@pytest.mark.parametrize(
    "interpret, message",
    [
        ({"num-references": 0}, "experiments/ci/interpret/num-references: 0 is less than the minimum of 1"),
        ({"targets": ["foo"]}, "experiments/ci/interpret/targets/0: 'foo' is not one of"),
        ({"models": ["transformation"]}, "experiments/ci/interpret/models/0: 'transformation' is not one of"),
        ({"regions": ["peaks-train"]}, "experiments/ci/interpret/regions/0: 'peaks-train' is not one of"),
        ({"max-regions": 0}, "experiments/ci/interpret/max-regions: 0 is less than the minimum of 1"),
        ({"batch-size": "8"}, "experiments/ci/interpret/batch-size: '8' is not of type 'integer'"),
        ({"models": []}, "experiments/ci/interpret/models: [] should be non-empty"),
        (
            {"enabeld": True},
            "experiments/ci/interpret: Additional properties are not allowed ('enabeld' was unexpected); "
            "did you mean 'enabled'?",
        ),
        ({"heads": ["chip"]}, "experiments/ci/interpret/heads: 'chip' is not a head of the experiment (nexus)"),
        ({"motifs": {"q-threshold": 0}}, "experiments/ci/interpret/motifs/q-threshold: 0 is less than or equal to"),
        ({"motifs": {"database": {"jaspr": True}}}, "experiments/ci/interpret/motifs/database: Additional properties"),
    ],
)
def test_bad_interpret_values_fail_at_planning(tmp_path, interpret, message):
    from snakemake.exceptions import WorkflowError

    cfg = interpret_config({"enabled": True, **interpret})
    with pytest.raises(WorkflowError) as err:
        run_workflow(tmp_path, [write_yaml(tmp_path / "bad.yaml", cfg)], dryrun=False)
    assert message in str(err.value)
    assert "bad.yaml, line" in str(err.value)  # the file and line that set it
    assert not (tmp_path / "results").exists()


def test_bad_interpret_resources_fail_at_planning(tmp_path):
    from snakemake.exceptions import WorkflowError

    cfg = interpret_config({"enabled": True})
    cfg.setdefault("resources", {})["interpret"] = {"gpu": -1}
    with pytest.raises(WorkflowError, match="resources/interpret/gpu: -1 is less than the minimum of 0"):
        run_workflow(tmp_path, [write_yaml(tmp_path / "bad.yaml", cfg)], dryrun=False)


def test_motifs_plan(tmp_path):
    """One motifs job per contribution file plus the bias model's profile; the residual's
    check reads the bias model's motifs summary; QC reports under qc/, pages in the report."""
    from snakemake.io import is_flagged

    from bpflow import schemas

    dag = plan(tmp_path, interpret_config({"enabled": True, "motifs": {"leiden-runs": 7}}))
    jobs = {Path(str(j.output.json)).name: j for j in jobs_by_rule(dag)["motifs"]}
    assert sorted(jobs) == [
        "bias_peaks-test.nexus.profile.json",
        "residual_peaks-test.nexus.counts.json",
        "residual_peaks-test.nexus.profile.json",
    ]
    bias_summary = "results/ci/motifs/bias_peaks-test.nexus.profile.json"
    for name, job in jobs.items():
        stem = name.removesuffix(".json")
        model = stem.split("_", 1)[0]
        inputs = set(map(str, job.input))
        assert f"results/ci/interpret/{stem}.h5" in inputs and f"{SIM}/truth.json" in inputs
        assert (bias_summary in inputs) == (model == "residual")
        assert str(job.output.qc) == f"results/ci/qc/motifs_{stem}.json"
        assert is_flagged(job.output.html, "report") and job.output.html.flags["report"].subcategory == "Motifs"
        assert job.shellcmd.startswith(f"bpflow motifs {job.input.config} --threads 2")
        cfg = step_json(next(j for j in jobs_by_rule(dag)["step_config"] if config_name(j) == f"motifs_{stem}"))
        assert cfg["check"] == cfg["model"] == model and cfg["leiden-runs"] == 7
        assert cfg["database"] == {"jaspar": True, "motif-files": [], "simulation-truth": f"{SIM}/truth.json"}
        assert cfg.get("bias-motifs-json") == (bias_summary if model == "residual" else None)
        schemas.validate(cfg, "motifs", name)
    assert "motifs" in {a.rule.name for a in ancestors(dag, jobs["residual_peaks-test.nexus.profile.json"])}
    (all_job,) = jobs_by_rule(dag)["all"]
    assert {f"results/ci/motifs/{n}" for n in jobs} <= set(map(str, all_job.input))

    dag = plan(tmp_path, interpret_config({"enabled": True, "motifs": {"enabled": False}}))
    assert "motifs" not in jobs_by_rule(dag) and len(jobs_by_rule(dag)["contributions"]) == 2


def test_the_end_of_run_summary_lists_the_motifs_warnings(tmp_path):
    """The Snakefile's onsuccess prints every QC report's warnings, the motifs' included."""
    import subprocess

    from test_workflow import SNAKEFILE, SNAKEMAKE

    cfg = interpret_config({"enabled": True})
    configfile = write_yaml(tmp_path / "config.yaml", cfg)
    qc = tmp_path / "results/ci/qc"
    qc.mkdir(parents=True)
    warning = "motifs of the residual model (nexus, profile): pattern pos_patterns.pattern_1 matches the bias motif"
    (qc / "motifs_residual_peaks-test.nexus.profile.json").write_text(json.dumps({"warnings": [warning]}))
    (qc / "combined.json").write_text(json.dumps({"warnings": ["head nexus: collapsed residual counts head"]}))
    # a report of a job this config does not plan (another region set) is stale: not listed
    (qc / "motifs_residual_peaks-val.nexus.profile.json").write_text(json.dumps({"warnings": ["stale"]}))
    target = "results/ci/configs/motifs_residual_peaks-test.nexus.profile.json"  # a cheap job to run
    proc = subprocess.run(
        [str(SNAKEMAKE), "-s", str(SNAKEFILE), "-d", str(tmp_path), "--configfile", str(configfile)]
        + ["--cores", "1", target],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = proc.stderr[proc.stderr.index("bpflow QC WARNINGS") :]
    assert f"  - ci: head nexus: collapsed residual counts head\n  - ci: {warning}\n" in summary
    assert "stale" not in summary


def test_a_combined_models_motifs_are_not_checked(tmp_path):
    """The combined model holds the bias branch by design: its patterns are reported but its
    check is off, and it does not wait for the bias model's motifs."""
    dag = plan(tmp_path, interpret_config({"enabled": True, "models": ["combined"], "targets": ["profile"]}))
    (job,) = [j for j in jobs_by_rule(dag)["motifs"] if "/combined_" in str(j.output.json)]
    cfg = step_json(next(j for j in jobs_by_rule(dag)["step_config"] if config_name(j).startswith("motifs_combined")))
    assert cfg["check"] == "none" and "bias-motifs-json" not in cfg
    assert not any("/motifs/bias_" in str(f) for f in job.input)
