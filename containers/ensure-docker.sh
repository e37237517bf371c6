#!/usr/bin/env bash
# ensure-docker.sh -- make sure a working Docker engine is available.
#
# What it does (idempotent; safe to run any number of times):
#   1. If `docker info` already succeeds, exit 0 immediately.
#   2. If `dockerd` is missing, install Debian's `docker.io` package with apt-get
#      (the Debian archive is reachable even where no image registry is).
#   3. Start `dockerd` in the background (setsid + nohup, log in /var/log/dockerd.log).
#      There is no systemd on the machines this targets, so nobody else starts it.
#   4. Wait (bounded) until `docker info` succeeds; otherwise fail with the log tail.
#
# Prerequisites: Debian 12 (bookworm) or similar, run as root, apt reachable.
#
# Usage:  containers/ensure-docker.sh
#
# Environment overrides:
#   DOCKERD_LOG           daemon log file            (default /var/log/dockerd.log)
#   DOCKERD_TIMEOUT       seconds to wait for daemon (default 60)
#   DOCKERD_EXTRA_ARGS    extra dockerd flags, word-split (e.g. "--storage-driver=vfs")
#
# Sandbox notes (checked on the project's Debian 12 VM, kernel 6.x, cgroup v1):
#   dockerd 20.10 (Debian docker.io) starts with its defaults there: overlay2
#   storage driver, iptables via iptables-nft, default bridge with NAT, so no extra
#   flags are needed. The fallbacks below only kick in where the kernel lacks them:
#   - no overlayfs            -> --storage-driver=vfs (slow, but works everywhere)
#   - iptables-nft broken     -> switch the iptables alternative to iptables-legacy
#   - no iptables at all      -> --iptables=false (WARNING: bridge containers then
#                                have no outbound NAT; use --network host)
#   A newer docker CLI (e.g. /usr/local/bin/docker 28.x) talks to this older daemon
#   fine: the client negotiates the API version down (1.41).
set -euo pipefail

LOG_FILE=${DOCKERD_LOG:-/var/log/dockerd.log}
TIMEOUT=${DOCKERD_TIMEOUT:-60}
PID_FILE=/var/run/docker.pid

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

docker_ok() { docker info >/dev/null 2>&1; }

# Fast path: nothing to do. (Needs a docker client; checked properly below.)
if command -v docker >/dev/null 2>&1 && docker_ok; then
    log "Docker engine already running."
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root to install/start dockerd (try sudo)."

# --- 1. Install the engine if needed ------------------------------------------------
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    log "dockerd/docker not found; installing Debian's docker.io via apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    # `apt-get update` first: on a fresh machine the package lists may be empty/stale.
    apt-get update -q >&2
    # --no-install-recommends: docker.io's hard Depends (containerd, runc, iptables,
    # tini) are all we need; recommends pull in git, apparmor, etc.
    apt-get install -y -q --no-install-recommends docker.io >&2
    hash -r
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd still not on PATH."
fi

# --- 2. Work out sandbox-specific dockerd flags -------------------------------------
dockerd_args=()
if [[ -n ${DOCKERD_EXTRA_ARGS:-} ]]; then
    # Intentional word splitting: the variable holds a list of flags.
    read -r -a extra <<<"$DOCKERD_EXTRA_ARGS"
    dockerd_args+=("${extra[@]}")
fi

# cgroups: without systemd a fresh VM may have nothing mounted on /sys/fs/cgroup,
# and dockerd refuses to start ("Devices cgroup isn't mounted"). Mount the unified
# (v2) hierarchy in that case; leave an existing v1 or v2 setup alone.
if [[ ! -e /sys/fs/cgroup/cgroup.controllers && ! -d /sys/fs/cgroup/devices ]]; then
    log "no cgroup hierarchy mounted; mounting cgroup2 on /sys/fs/cgroup"
    mount -t cgroup2 none /sys/fs/cgroup || log "WARNING: could not mount cgroup2"
fi

# Storage driver: overlay2 needs overlayfs in the kernel; vfs always works.
if [[ " ${DOCKERD_EXTRA_ARGS:-} " != *"storage-driver"* ]] \
    && ! grep -qw overlay /proc/filesystems && ! modprobe overlay 2>/dev/null; then
    log "kernel has no overlayfs; using --storage-driver=vfs"
    dockerd_args+=(--storage-driver=vfs)
fi

# iptables: dockerd needs it for the bridge's NAT (containers -> PyPI).
if [[ " ${DOCKERD_EXTRA_ARGS:-} " != *"--iptables"* ]]; then
    if iptables -w -t nat -nL >/dev/null 2>&1; then
        : # default (iptables-nft on bookworm) works
    elif command -v iptables-legacy >/dev/null 2>&1 && iptables-legacy -w -t nat -nL >/dev/null 2>&1; then
        log "iptables-nft unusable here; switching the iptables alternative to iptables-legacy"
        update-alternatives --set iptables /usr/sbin/iptables-legacy >&2
        update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >&2 || true
    else
        log "WARNING: no working iptables; starting dockerd with --iptables=false."
        log "WARNING: containers on the default bridge will have NO outbound network."
        dockerd_args+=(--iptables=false)
    fi
fi

# --- 3. Start dockerd (unless one is already starting) ------------------------------
dockerd_pid=""
if [[ -s $PID_FILE ]]; then
    old_pid=$(cat "$PID_FILE")
    if kill -0 "$old_pid" 2>/dev/null; then
        # A daemon is alive but `docker info` failed: probably still starting up.
        log "dockerd already running as pid $old_pid; waiting for it."
        dockerd_pid=$old_pid
    else
        # A killed dockerd leaves its pid file behind and a new one then refuses to
        # start ("pid file found, ensure docker is not running").
        log "removing stale $PID_FILE (pid $old_pid is gone)"
        rm -f "$PID_FILE"
    fi
fi

if [[ -z $dockerd_pid ]]; then
    mkdir -p "$(dirname "$LOG_FILE")"
    log "starting dockerd ${dockerd_args[*]:-} (log: $LOG_FILE)"
    # setsid: own session/process group, so the daemon survives the calling shell
    # or CI job being torn down. stdin from /dev/null so it never holds a terminal.
    setsid nohup dockerd "${dockerd_args[@]}" >>"$LOG_FILE" 2>&1 </dev/null &
    dockerd_pid=$!
fi

# --- 4. Wait (bounded) for the daemon to answer -------------------------------------
deadline=$((SECONDS + TIMEOUT))
until docker_ok; do
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
        log "dockerd (pid $dockerd_pid) exited during startup. Last log lines:"
        tail -n 40 "$LOG_FILE" >&2 || true
        die "dockerd failed to start (see $LOG_FILE; DOCKERD_EXTRA_ARGS can pass flags, e.g. --storage-driver=vfs)."
    fi
    if ((SECONDS >= deadline)); then
        log "dockerd did not answer within ${TIMEOUT}s. Last log lines:"
        tail -n 40 "$LOG_FILE" >&2 || true
        die "timed out waiting for dockerd (pid $dockerd_pid still running; see $LOG_FILE)."
    fi
    sleep 1
done

log "Docker engine is up ($(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}' 2>/dev/null || echo 'version unknown'))."
