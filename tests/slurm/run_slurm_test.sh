#!/usr/bin/env bash
# The SLURM profile against a real, single-node SLURM on this machine.
#
#   sudo tests/slurm/run_slurm_test.sh            (root; Debian/Ubuntu; uses apt-get)
#
# Installs Debian's slurm-wlm and munge, starts munged, slurmctld and slurmd on a node that
# declares one fake GPU (its slurm.conf and gres.conf go to /etc/slurm - the plugin strips
# SLURM_* variables such as SLURM_CONF inside jobs - and any existing ones are restored),
# runs the CI-sized workflow (config/ci.yaml) with
# `--profile profiles/slurm` through snakemake-executor-plugin-slurm, then checks from the
# controller's job records that the three training jobs were submitted with one GPU and the
# data jobs without one.  Stops the daemons it started (by PID) on exit.
# Environment: BPFLOW_VENV (default <repo>/.venv), BPFLOW_SLURM_TIMEOUT (seconds, default 1200),
# BPFLOW_SLURM_KEEP=1 keeps the work directory.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${BPFLOW_VENV:-$REPO/.venv}"
TIMEOUT="${BPFLOW_SLURM_TIMEOUT:-1200}"
WORK="$(mktemp -d /tmp/bpflow-slurm.XXXXXX)"
STATE="$WORK/slurm"
ETC=/etc/slurm
PIDS=()
RESTORE=0

log() { echo "[slurm-test] $*" >&2; }

cleanup() {
    local rc=$?
    for ((i=${#PIDS[@]}-1; i>=0; i--)); do
        kill "${PIDS[$i]}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "$RESTORE" = 1 ]; then
        for f in slurm.conf gres.conf; do
            rm -f "$ETC/$f"
            if [ -e "$WORK/etc-backup/$f" ]; then cp -p "$WORK/etc-backup/$f" "$ETC/$f"; fi
        done
    fi
    if [ "$rc" -ne 0 ] && [ -d "$STATE" ]; then
        log "failed (exit $rc); daemon logs:"
        tail -n 20 "$STATE"/*.log >&2 2>/dev/null || true
    fi
    if [ "${BPFLOW_SLURM_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { log "needs root (apt-get, munged, slurmd)"; exit 2; }
[ -x "$VENV/bin/snakemake" ] || { log "no snakemake in $VENV (make install)"; exit 2; }
"$VENV/bin/python" -c "import snakemake_executor_plugin_slurm" \
    || { log "snakemake-executor-plugin-slurm is not installed in $VENV"; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n 1)"
mkdir -p "$STATE/ctld" "$STATE/d" /run/munge "$ETC" "$WORK/etc-backup"
for f in slurm.conf gres.conf; do
    if [ -e "$ETC/$f" ]; then cp -p "$ETC/$f" "$WORK/etc-backup/$f"; fi
done
RESTORE=1
SLURM_CONF="$ETC/slurm.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=bpflowtest
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
EnforcePartLimits=ALL
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
GresTypes=gpu
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
echo "NodeName=$HOST Name=gpu File=/dev/null" > "$ETC/gres.conf"

# munge: the package creates /etc/munge/munge.key; make one if it did not
if [ ! -s /etc/munge/munge.key ]; then
    (command -v mungekey >/dev/null && mungekey --create --keyfile /etc/munge/munge.key) \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
fi
chown munge:munge /run/munge 2>/dev/null || true
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged -F > "$STATE/munged.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
log "starting slurmctld and slurmd (node $HOST, $CPUS CPUs, ${MEM} MB, one fake GPU)"
/usr/sbin/slurmctld -D -i -f "$SLURM_CONF" > "$STATE/slurmctld.out" 2>&1 &
PIDS+=($!)
sleep 1
/usr/sbin/slurmd -D -f "$SLURM_CONF" > "$STATE/slurmd.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    sinfo -h -o "%T" 2>/dev/null | grep -qx idle && break
    sleep 0.2
done
sinfo -h -o "%T" | grep -qx idle || { log "the node did not become idle: $(sinfo -h 2>&1)"; exit 1; }

# Record every job the controller sees (completed jobs stay visible for MinJobAge).
(while true; do scontrol -o show job 2>/dev/null >> "$WORK/jobs.raw" || true; sleep 2; done) &
PIDS+=($!)

log "running the CI workflow with --profile profiles/slurm (work directory $WORK/run)"
export PATH="$VENV/bin:$PATH"
cd "$REPO"
start=$(date +%s)
timeout -k 10 "$TIMEOUT" "$VENV/bin/snakemake" --profile profiles/slurm --workflow-profile none \
    --configfile config/ci.yaml --directory "$WORK/run" \
    --slurm-init-seconds-before-status-checks 2 --seconds-between-status-checks 5 \
    > "$WORK/snakemake.log" 2>&1 || { tail -n 60 "$WORK/snakemake.log" >&2; exit 1; }
log "workflow finished in $(( $(date +%s) - start )) s"
scontrol -o show job >> "$WORK/jobs.raw"

"$VENV/bin/python" - "$WORK/jobs.raw" "$WORK/run" <<'PY'
import re, sys
from pathlib import Path

jobs = {}
for line in Path(sys.argv[1]).read_text().splitlines():
    m = re.search(r"\bJobId=(\d+)\b", line)
    if m:
        jobs[m.group(1)] = line          # the latest record of each job wins
rules = {}
for jid, line in jobs.items():
    m = re.search(r"\bComment=rule_(\S+?)(?:_wildcards_\S*)?(?=\s|$)", line) or \
        re.search(r"\bStdOut=\S*slurm_logs/rule_([A-Za-z0-9_]+)/", line)
    if not m:
        continue
    gpu = re.search(r"\bTresPerJob=\S*gpu:(\d+)", line)
    state = re.search(r"\bJobState=(\w+)", line).group(1)
    rules.setdefault(m.group(1), []).append((jid, int(gpu.group(1)) if gpu else 0, state))
problems = []
for rule, expected in [("train_bias", 1), ("train_transformation", 1), ("train_combined", 1),
                       ("simulate", 0), ("regions_sampled", 0), ("dataset", 0)]:
    found = rules.get(rule, [])
    if not found:
        problems.append(f"no SLURM job of rule {rule}")
    for jid, gpus, state in found:
        print(f"job {jid:>5}  {rule:<20} gpus={gpus}  {state}")
        if gpus != expected:
            problems.append(f"job {jid} ({rule}) asked for {gpus} GPU(s), expected {expected}")
        if state != "COMPLETED":
            problems.append(f"job {jid} ({rule}) ended {state}")
local = {"simulate_config", "regions_config", "dataset_config", "train_config"} & set(rules)
if local:
    problems.append(f"config-writing rules were submitted to SLURM: {sorted(local)}")
run = Path(sys.argv[2]) / "results" / "ci" / "models"
for name in ("bias.keras", "transformation.keras", "combined.keras", "residual.keras"):
    if not (run / name).is_file():
        problems.append(f"missing output {run / name}")
print(f"{sum(len(v) for v in rules.values())} SLURM jobs of {len(rules)} rules")
if problems:
    print("FAILED:\n  " + "\n  ".join(problems))
    sys.exit(1)
print("OK: training jobs ran with --gpus=1, data jobs without a GPU")
PY
