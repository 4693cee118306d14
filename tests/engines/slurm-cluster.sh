#!/usr/bin/env bash
# slurm-cluster.sh - bring up / tear down a private one-node Slurm cluster.
#
#   slurm-cluster.sh up   STATE_DIR    # start munged, slurmctld, slurmd; wait for the node to be idle
#   slurm-cluster.sh down STATE_DIR    # cancel jobs, stop the three daemons by pid, wait for exit
#   slurm-cluster.sh status STATE_DIR  # show pids and sinfo (exit 0 if all three daemons are alive)
#
# Everything lives under STATE_DIR: slurm.conf, a private munge key/socket/pid/log/seed,
# slurmctld state, slurmd spool, logs and pid files. /etc/slurm, /etc/munge, /run and
# /var/lib/slurm are not touched, so several clusters (different STATE_DIRs) can coexist
# with each other and with a system cluster.
#
# `up` prints exactly one line on stdout, last:   export SLURM_CONF=STATE_DIR/slurm.conf
# so a caller can do:   eval "$(tests/engines/slurm-cluster.sh up "$dir")"
# Progress, timing and errors go to stderr.
#
# Needs root (slurmd runs jobs as the submitting user) and the Debian packages
# slurm-wlm (slurmctld, slurmd, slurm-client) and munge. Does not need systemd.
#
# Environment knobs (all optional):
#   SLURM_CLUSTER_PORT      first port to try for SlurmctldPort (default 16817); SlurmdPort is +1.
#                           If the pair is in use, the next free pair (+2, +4, ...) is used.
#   SLURM_CLUSTER_TIMEOUT   seconds `up` waits for the node to become idle (default 60)
#   SLURM_CLUSTER_KEEP      if 1, a failed `up` leaves the daemons running (default: tears down)
#   SLURM_CLUSTER_MIN_JOB_AGE  MinJobAge in seconds (default 300): how long finished jobs stay
#                           visible to scontrol/squeue. `sbatch --wait` polls after 2, 8, 32, 32...
#                           s, but stays at 2 s when MinJobAge <= 4 (at the cost of records
#                           vanishing seconds after a job ends).
set -euo pipefail

prog=${0##*/}
say() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd=$1
case $cmd in up|down|status) ;; *) usage ;; esac
[ -n "$2" ] || usage
mkdir -p -- "$2"
S=$(cd -- "$2" && pwd -P)

CONF=$S/slurm.conf
MUNGE_DIR=$S/munge
RUN=$S/run
LOG=$S/log
CTLD_PID=$RUN/slurmctld.pid
SLURMD_PID=$RUN/slurmd.pid
MUNGED_PID=$MUNGE_DIR/munged.pid
export SLURM_CONF=$CONF

now() { date +%s.%N; }

# --- process helpers -------------------------------------------------------
# alive PID NAME: true if PID is a live (non-zombie) process whose comm is NAME.
alive() {
    local pid=$1 name=$2 stat comm
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/stat" ] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$comm" = "$name" ] || return 1
    stat=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ "$stat" != Z ] && [ "$stat" != X ]
}
pid_of() { [ -s "$1" ] && tr -dc 0-9 <"$1" || true; }

# stop_daemon NAME PIDFILE MATCH: SIGTERM the pid in PIDFILE (plus any process NAME whose
# command line contains MATCH, a path unique to this STATE_DIR, in case the pid file was
# never written), wait up to 20 s, then SIGKILL and wait again.
stop_daemon() {
    local name=$1 pidfile=$2 match=$3 pids=() p i
    p=$(pid_of "$pidfile")
    if [ -n "$p" ] && alive "$p" "$name"; then pids+=("$p"); fi
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        [ "$(cat "$d/comm" 2>/dev/null)" = "$name" ] || continue
        tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qF -- "$match" || continue
        [[ " ${pids[*]-} " == *" $p "* ]] || pids+=("$p")
    done
    if [ ${#pids[@]} -eq 0 ]; then
        rm -f -- "$pidfile"
        return 0
    fi
    say "stopping $name (pid ${pids[*]})"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for i in $(seq 200); do
        local left=()
        for p in "${pids[@]}"; do alive "$p" "$name" && left+=("$p"); done
        [ ${#left[@]} -eq 0 ] && { rm -f -- "$pidfile"; return 0; }
        [ "$i" -eq 200 ] && break
        sleep 0.1
    done
    say "$name did not exit after SIGTERM; sending SIGKILL to ${left[*]}"
    kill -KILL "${left[@]}" 2>/dev/null || true
    for i in $(seq 50); do
        local still=0
        for p in "${left[@]}"; do alive "$p" "$name" && still=1; done
        [ $still -eq 0 ] && { rm -f -- "$pidfile"; return 0; }
        sleep 0.1
    done
    say "warning: $name ${left[*]} still alive"
    return 1
}

do_down() {
    local rc=0
    # Cancel jobs first so no slurmstepd/job outlives the cluster (only if slurmctld answers).
    if alive "$(pid_of "$CTLD_PID")" slurmctld && command -v squeue >/dev/null; then
        local jobs
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') || true
        if [ -n "${jobs// /}" ]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 50); do
                [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ] && break
                sleep 0.2
            done
        fi
    fi
    stop_daemon slurmd "$SLURMD_PID" "$CONF" || rc=1
    stop_daemon slurmctld "$CTLD_PID" "$CONF" || rc=1
    stop_daemon munged "$MUNGED_PID" "$MUNGE_DIR/" || rc=1
    rm -f -- "$MUNGE_DIR/munge.socket.2" "$MUNGE_DIR/munge.socket.2.lock"
    if [ $rc -eq 0 ]; then say "down ($S)"; else say "down with warnings ($S)"; fi
    return $rc
}

do_status() {
    local ok=0 n f
    for n in munged:$MUNGED_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
        f=${n#*:}; n=${n%%:*}
        if alive "$(pid_of "$f")" "$n"; then say "$n running (pid $(pid_of "$f"))"
        else say "$n not running"; ok=1; fi
    done
    [ $ok -eq 0 ] && sinfo >&2 || true
    return $ok
}

# --- up --------------------------------------------------------------------
port_in_use() {  # port_in_use PORT: true if something listens on TCP PORT (v4 or v6)
    local hex
    hex=$(printf '%04X' "$1")
    awk -v h="$hex" 'NR>1 { split($2, a, ":"); if (a[2] == h && $4 == "0A") f=1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Known harmless log lines, left out of the tails shown on failure.
NOISE='pmix|MPI: Cannot create context|state file|Trying backup state save|select/cons_tres|mcs:|mcs plugin|Reinitializing job accounting|backup_controller not specified|supplementary group|PRNG'

log_tails() {
    local f
    for f in "$MUNGE_DIR/munged.log" "$LOG/slurmctld.log" "$LOG/slurmd.log"; do
        # slurmctld/slurmd with -D also write to stderr (*.out): the only place for errors
        # raised before they open their log file (e.g. a bad slurm.conf).
        [ -s "$f" ] || f=${f%.log}.out
        [ -s "$f" ] || continue
        printf -- '----- tail %s (known noise filtered) -----\n' "$f" >&2
        grep -vE "$NOISE" "$f" | tail -n 12 >&2 || true
    done
}

fail_up() {
    say "error: $*"
    log_tails
    if [ "${SLURM_CLUSTER_KEEP:-0}" = 1 ]; then
        say "SLURM_CLUSTER_KEEP=1: leaving daemons running; run: $0 down $S"
    else
        say "tearing down the half-started cluster (logs kept in $S)"
        do_down || true
    fi
    exit 1
}

# start_bg PIDFILE LOGFILE CMD...: start CMD in the foreground mode of the daemon, detached
# (own session, no inherited stdio), and record its pid ourselves so `down` can always find it.
start_bg() {
    local pidfile=$1 out=$2; shift 2
    setsid "$@" </dev/null >>"$out" 2>&1 &
    echo $! >"$pidfile"
}

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
    local secs=$1 what=$2 i; shift 2
    for i in $(seq $((secs * 5))); do
        "$@" && return 0
        sleep 0.2
    done
    fail_up "timed out after ${secs}s waiting for $what"
}

do_up() {
    local t0 timeout node cpus mem_mb real_mem port sport dport i p
    t0=$(now)
    timeout=${SLURM_CLUSTER_TIMEOUT:-60}

    [ "$(id -u)" -eq 0 ] || die "must run as root (slurmd runs jobs as the submitting user)"
    PATH=$PATH:/usr/sbin:/sbin
    local b p missing=()
    for b in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client sbatch:slurm-client \
             scontrol:slurm-client munged:munge mungekey:munge munge:munge; do
        p=$(command -v "${b%%:*}" 2>/dev/null) && [ -f "$p" ] && [ -x "$p" ] ||
            missing+=("${b%%:*} (Debian package ${b#*:})")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        die "missing: ${missing[*]}; install with: apt-get install -y slurm-wlm munge"
    fi

    # Refuse if anything of ours is still alive in this STATE_DIR.
    local running=()
    alive "$(pid_of "$MUNGED_PID")" munged && running+=("munged $(pid_of "$MUNGED_PID")")
    alive "$(pid_of "$CTLD_PID")" slurmctld && running+=("slurmctld $(pid_of "$CTLD_PID")")
    alive "$(pid_of "$SLURMD_PID")" slurmd && running+=("slurmd $(pid_of "$SLURMD_PID")")
    if [ ${#running[@]} -gt 0 ]; then
        die "cluster already up in $S (${running[*]}); run: $0 down $S"
    fi

    mkdir -p "$MUNGE_DIR" "$RUN" "$LOG" "$S/ctld" "$S/spool"
    chmod 0755 "$MUNGE_DIR"
    rm -f -- "$MUNGED_PID" "$CTLD_PID" "$SLURMD_PID" \
        "$MUNGE_DIR/munge.socket.2" "$MUNGE_DIR/munge.socket.2.lock"

    # munged: private key, socket, pid, log and seed. Running as root needs a root-owned
    # key, so we generate our own instead of using /etc/munge/munge.key (owned by munge).
    # --force: munged refuses a socket whose parent dirs are not world-executable (mktemp -d
    # makes 0700 dirs); with --force that is only a warning, and root clients connect fine.
    # In --foreground mode munged logs to stderr, which start_bg sends to munged.log.
    local sock=$MUNGE_DIR/munge.socket.2
    [ ${#sock} -le 100 ] || die "STATE_DIR path too long for a unix socket (${#sock} > 100 chars): $sock"
    if [ ! -s "$MUNGE_DIR/munge.key" ]; then
        mungekey --create --bits=1024 --keyfile="$MUNGE_DIR/munge.key" 2>>"$MUNGE_DIR/munged.log" >&2 ||
            fail_up "mungekey failed"
    fi
    chmod 0600 "$MUNGE_DIR/munge.key"
    start_bg "$MUNGED_PID" "$MUNGE_DIR/munged.log" munged --foreground --force \
        --socket="$sock" --pid-file="$MUNGED_PID" \
        --seed-file="$MUNGE_DIR/munged.seed" --key-file="$MUNGE_DIR/munge.key"
    wait_for 10 "munged socket $sock" \
        sh -c 'munge -S "$1" -n 2>/dev/null | unmunge -S "$1" >/dev/null 2>&1' _ "$sock"

    # Node description.
    node=$(hostname -s)
    [ -n "$node" ] || fail_up "hostname -s is empty"
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
    real_mem=$((mem_mb - (mem_mb / 10 > 256 ? mem_mb / 10 : 256)))
    [ "$real_mem" -ge 100 ] || real_mem=100

    # Ports: a free consecutive pair starting at SLURM_CLUSTER_PORT.
    port=${SLURM_CLUSTER_PORT:-16817}
    sport=
    for i in $(seq 0 49); do
        p=$((port + 2 * i))
        if ! port_in_use "$p" && ! port_in_use $((p + 1)); then sport=$p; break; fi
    done
    [ -n "$sport" ] || fail_up "no free port pair in $port..$((port + 99))"
    dport=$((sport + 1))

    cat >"$CONF" <<EOF
# Generated by $prog for a private one-node test cluster. Do not edit: regenerated by 'up'.
ClusterName=kmatrix
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$sport
SlurmdPort=$dport
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=${SLURM_CLUSTER_MIN_JOB_AGE:-300}
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

    start_bg "$CTLD_PID" "$LOG/slurmctld.out" slurmctld -D -f "$CONF"
    wait_for 20 "slurmctld to answer on 127.0.0.1:$sport" \
        sh -c 'scontrol ping 2>/dev/null | grep -q "is UP"'
    start_bg "$SLURMD_PID" "$LOG/slurmd.out" slurmd -D -f "$CONF" -N "$node"

    local deadline state=
    deadline=$(awk -v t="$t0" -v d="$timeout" 'BEGIN { printf "%d", t + d }')
    while :; do
        alive "$(pid_of "$CTLD_PID")" slurmctld || fail_up "slurmctld exited"
        alive "$(pid_of "$SLURMD_PID")" slurmd || fail_up "slurmd exited"
        state=$(sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n1) || true
        [ "$state" = idle ] && break
        # INVAL is final: slurmd reported less hardware than slurm.conf claims.
        [ "$state" = inval ] && fail_up "node $node is INVAL (slurm.conf CPUs/RealMemory exceed what slurmd found; see slurmctld.log)"
        [ "$(date +%s)" -lt "$deadline" ] ||
            fail_up "node $node not idle after ${timeout}s (state: '${state:-none}')"
        sleep 0.3
    done

    say "up in $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')s: node $node" \
        "CPUs=$cpus RealMemory=${real_mem}M, ports $sport/$dport, state in $S"
    echo "export SLURM_CONF=$CONF"
}

case $cmd in
    up) do_up ;;
    down) do_down ;;
    status) do_status ;;
esac
