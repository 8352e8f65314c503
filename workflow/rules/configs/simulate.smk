# The simulation's config (rules: ../simulate.smk; results/simulated/<name>.json).


def simulate_json(sim):
    spec = SIMULATIONS[sim]
    cfg = copy.deepcopy(spec["options"])
    cfg.update({"preset": spec["preset"], "seed": spec["seed"], "output-dir": f"{SIMULATED_DIR}/{sim}"})
    return cfg
