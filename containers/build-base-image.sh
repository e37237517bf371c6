#!/usr/bin/env bash
# build-base-image.sh -- build conveyor's slim Python base image WITHOUT any registry.
#
# What it does
#   Builds a minimal Debian (bookworm by default) root filesystem with
#   `debootstrap --variant=minbase` from an apt mirror, adds python3 (3.11 on
#   bookworm), python3-venv (so `python3 -m venv` + ensurepip work offline),
#   ca-certificates, applies pending updates, adds the host's extra CA
#   certificates (e.g. a TLS-intercepting proxy's CA) so pip/uv/requests inside
#   containers trust the same endpoints the host does, creates the non-root user
#   `conveyor` (uid/gid 1000, home /home/conveyor), strips docs/man/apt lists,
#   and turns the tree into an image with `tar | docker import`.
#   Nothing is pulled from Docker Hub or any other image registry, so it works
#   where `docker pull` cannot (air-gapped sites with only a Debian mirror).
#
# Prerequisites
#   - root, on Debian/Ubuntu (apt-get is used to install debootstrap if missing);
#   - a running Docker engine (if `docker info` fails, ./ensure-docker.sh next to
#     this script is run to install/start one);
#   - a reachable Debian mirror: by default the first one configured for the
#     suite in /etc/apt/sources.list{,.d/*}; override with --mirror / $DEBIAN_MIRROR.
#
# Usage
#   containers/build-base-image.sh [--tag TAG] [--force] [--suite SUITE]
#                                  [--mirror URL] [--security-mirror URL]
#                                  [--ca-bundle PATH] [--no-upgrade]
#   --tag TAG              image tag (default conveyor/python-base:3.11; $CONVEYOR_BASE_IMAGE)
#   --force                rebuild even if TAG already exists (default: exit 0 at once)
#   --suite SUITE          Debian suite (default bookworm; $DEBIAN_SUITE). The default
#                          tag says 3.11 because bookworm ships Python 3.11; pass a
#                          matching --tag for another suite.
#   --mirror URL           Debian mirror ($DEBIAN_MIRROR)
#   --security-mirror URL  Debian security mirror ($DEBIAN_SECURITY_MIRROR); default:
#                          from the host's sources, else MIRROR-security for .../debian
#   --ca-bundle PATH       PEM bundle whose extra certificates the image must trust
#                          (default /etc/ssl/certs/ca-certificates.crt; $CA_BUNDLE)
#   --no-upgrade           skip `apt-get upgrade` from SUITE-updates/SUITE-security
#                          (e.g. an air-gapped mirror that only carries SUITE)
#   The tag is printed on stdout (the only stdout line); progress goes to stderr.
#
# In the image
#   ENV SSL_CERT_FILE, PIP_CERT and REQUESTS_CA_BUNDLE = /etc/ssl/certs/ca-certificates.crt,
#   LANG=C.UTF-8, CMD ["python3"]; default user root, run with `--user 1000` (or
#   `--user conveyor`) for the unprivileged user.
#
# Users who CAN reach a registry may simply use the official `python:3.11-slim`
# image instead; this script exists for machines where that pull is impossible.
# (With python:3.11-slim behind a TLS-intercepting proxy, still mount or copy the
# proxy CA into the container and point SSL_CERT_FILE/PIP_CERT at it.)
set -euo pipefail

# ---- defaults ------------------------------------------------------------------------
TAG=${CONVEYOR_BASE_IMAGE:-conveyor/python-base:3.11}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
FORCE=0
UPGRADE=1
APP_USER=conveyor
APP_UID=1000
# Packages on top of minbase. python3-venv brings python3.11-venv plus the pip and
# setuptools wheels ensurepip needs, so venvs get pip without network access.
# python-is-python3 is just a `python` symlink (a few KB).
PACKAGES=python3,python3-venv,ca-certificates,python-is-python3
IMAGE_CA=/etc/ssl/certs/ca-certificates.crt   # bundle path inside the image
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'build-base-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

while (($#)); do
    case $1 in
        --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
        --force) FORCE=1; shift ;;
        --suite) SUITE=${2:?--suite needs a value}; shift 2 ;;
        --mirror) MIRROR=${2:?--mirror needs a value}; shift 2 ;;
        --security-mirror) SECURITY_MIRROR=${2:?--security-mirror needs a value}; shift 2 ;;
        --ca-bundle) CA_BUNDLE=${2:?--ca-bundle needs a value}; shift 2 ;;
        --no-upgrade) UPGRADE=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot need it)."

# ---- docker ------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    log "Docker engine not reachable; running ensure-docker.sh"
    "$SCRIPT_DIR/ensure-docker.sh"
fi

# Quick exit: building takes minutes, so reuse an existing image unless --force.
if ((!FORCE)) && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG already exists (use --force to rebuild)."
    printf '%s\n' "$TAG"
    exit 0
fi

[[ -r $CA_BUNDLE ]] || die "CA bundle not readable: $CA_BUNDLE"

# ---- mirror discovery --------------------------------------------------------------
# Print the first URI the host's apt configuration uses for suite $1 (exact match,
# so "bookworm" does not match "bookworm-updates"). Handles both the one-line
# format (sources.list, *.list) and deb822 (*.sources); ignores comments, disabled
# files (anything not ending in .list/.sources) and "Enabled: no" stanzas.
host_mirror_for() {
    local suite=$1 f
    shopt -s nullglob
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        awk -v s="$suite" '
            /^[[:space:]]*#/ { next }
            $1 == "deb" {
                sub(/\[[^]]*\]/, "")          # drop [arch=... signed-by=...]
                if ($3 == s) { print $2; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        awk -v s="$suite" '
            BEGIN { RS = ""; FS = "\n" }      # paragraph mode: one stanza per record
            {
                types = ""; uris = ""; suites = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^[[:space:]]*#/) continue
                    key = tolower($i); sub(/:.*/, "", key)
                    val = $i; sub(/^[^:]*:[[:space:]]*/, "", val)
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "enabled") enabled = tolower(val)
                }
                if (enabled == "no" || (" " types " ") !~ / deb /) next
                if ((" " suites " ") ~ (" " s " ")) { split(uris, u, /[[:space:]]+/); print u[1]; exit }
            }' "$f"
    done
    shopt -u nullglob
}

if [[ -z $MIRROR ]]; then
    MIRROR=$(host_mirror_for "$SUITE" | head -n 1)
    [[ -n $MIRROR ]] || MIRROR=http://deb.debian.org/debian
fi
MIRROR=${MIRROR%/}
if [[ -z $SECURITY_MIRROR ]]; then
    SECURITY_MIRROR=$(host_mirror_for "$SUITE-security" | head -n 1)
    if [[ -z $SECURITY_MIRROR && $MIRROR == */debian ]]; then
        SECURITY_MIRROR=$MIRROR-security
    fi
fi
SECURITY_MIRROR=${SECURITY_MIRROR%/}

# ---- tools -------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap via apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends debootstrap debian-archive-keyring >&2
fi
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
keyring_args=()
[[ -r $KEYRING ]] && keyring_args=(--keyring="$KEYRING")

# ---- workspace + cleanup -----------------------------------------------------------
# Under /var/tmp (disk-backed) rather than /tmp, which may be a small tmpfs.
WORK=$(mktemp -d "${BUILD_TMPDIR:-/var/tmp}/conveyor-base.XXXXXX")
ROOTFS=$WORK/rootfs
IMAGE_ID=""

cleanup() {
    local rc=$?
    # Unmount anything still mounted inside the rootfs (our /proc, or /dev, /sys
    # left behind by an interrupted debootstrap) BEFORE deleting it; rm
    # --one-file-system is a second guard against deleting through a mount.
    if [[ -d $ROOTFS ]]; then
        local m
        while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done < <(awk -v r="$ROOTFS" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r)
    fi
    rm -rf --one-file-system "$WORK"
    if ((rc != 0)) && [[ -n $IMAGE_ID ]]; then
        docker image rm "$IMAGE_ID" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

START=$SECONDS
if ((UPGRADE)); then
    log "suite=$SUITE mirror=$MIRROR security=${SECURITY_MIRROR:-none} tag=$TAG"
else
    log "suite=$SUITE mirror=$MIRROR (no upgrade) tag=$TAG"
fi
log "debootstrap --variant=minbase into $ROOTFS (takes a minute or two) ..."

# ---- 1. debootstrap ----------------------------------------------------------------
# debootstrap follows Depends only (not Recommends), which keeps the tree small.
debootstrap --variant=minbase --include="$PACKAGES" "${keyring_args[@]}" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 40 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (log above)."
}

in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

mount -t proc proc "$ROOTFS/proc"
# Never start services from maintainer scripts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"

# ---- 2. image-wide apt/dpkg configuration ------------------------------------------
# Keep docs/man/locales out of every later `apt-get install` in derived images too
# (same idea as Debian's official slim images); copyright files are kept.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/01-conveyor-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
# Drop downloaded .debs after each install (apt's equivalent of --no-cache).
cat >"$ROOTFS/etc/apt/apt.conf.d/01-conveyor-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF

{
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE"
    if ((UPGRADE)); then
        printf 'deb %s %s-updates main\n' "$MIRROR" "$SUITE"
        [[ -z $SECURITY_MIRROR ]] || printf 'deb %s %s-security main\n' "$SECURITY_MIRROR" "$SUITE"
    fi
} >"$ROOTFS/etc/apt/sources.list"

# ---- 3. host CA certificates -------------------------------------------------------
# Add only the certificates the image's own Mozilla bundle lacks (e.g. the proxy
# CA) as /usr/local/share/ca-certificates/*.crt, one per file, then regenerate the
# bundle. Unlike overwriting /etc/ssl/certs/ca-certificates.crt this survives a
# later `update-ca-certificates` in a derived image, and works both for a full
# host bundle and for a --ca-bundle holding only the proxy CA.
mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
awk -v outdir="$ROOTFS/usr/local/share/ca-certificates" '
    /-----BEGIN CERTIFICATE-----/ { cert = ""; inside = 1 }
    inside { gsub(/\r/, ""); cert = cert $0 "\n" }
    /-----END CERTIFICATE-----/ && inside {
        inside = 0
        if (FILENAME == ARGV[1]) { known[cert] = 1; next }
        if (!(cert in known)) {
            known[cert] = 1
            f = sprintf("%s/conveyor-host-%03d.crt", outdir, ++n)
            printf "%s", cert > f; close(f)
        }
    }
    END { print n + 0 }' "$ROOTFS$IMAGE_CA" "$CA_BUNDLE" >"$WORK/extra-ca-count"
log "adding $(cat "$WORK/extra-ca-count") extra CA certificate(s) from $CA_BUNDLE"
in_root update-ca-certificates >"$WORK/update-ca.log" 2>&1 || {
    cat "$WORK/update-ca.log" >&2
    die "update-ca-certificates failed in the rootfs."
}

# ---- 4. updates --------------------------------------------------------------------
if ((UPGRADE)); then
    log "applying ${SUITE}-updates/${SUITE}-security with apt-get upgrade ..."
    if ! in_root apt-get update -q >"$WORK/apt.log" 2>&1; then
        tail -n 20 "$WORK/apt.log" >&2
        die "apt-get update failed inside the rootfs (mirror without -updates/-security? try --no-upgrade or --security-mirror)."
    fi
    in_root apt-get -y -q -o Dpkg::Options::=--force-confold upgrade >>"$WORK/apt.log" 2>&1 || {
        tail -n 20 "$WORK/apt.log" >&2
        die "apt-get upgrade failed inside the rootfs."
    }
fi

# ---- 5. non-root user --------------------------------------------------------------
# Later pipeline steps run containers as uid 1000; give it a passwd entry and a
# writable home so HOME, pip's cache and `python3 -m venv ~/venv` just work.
in_root groupadd --gid "$APP_UID" "$APP_USER"
in_root useradd --no-log-init --uid "$APP_UID" --gid "$APP_UID" \
    --create-home --home-dir "/home/$APP_USER" --shell /bin/bash "$APP_USER"

# ---- 6. slim down ------------------------------------------------------------------
in_root apt-get clean
rm -f "$ROOTFS/usr/sbin/policy-rc.d"
umount "$ROOTFS/proc"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* \
    "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian \
    "$ROOTFS"/usr/share/linda "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* \
    "$ROOTFS"/root/.cache
# Docs: keep only the copyright files (licence compliance), as dpkg.cfg.d says.
find "$ROOTFS/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# Docker supplies these at run time; don't bake the build host's values in.
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"
: >"$ROOTFS/etc/machine-id"

# ---- 7. import ---------------------------------------------------------------------
log "importing rootfs ($(du -sh --one-file-system "$ROOTFS" | cut -f1)) into docker ..."
BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# --numeric-owner: uids/gids are what count inside the image, not the host's names.
# /dev /proc /sys contents are excluded: Docker mounts its own at run time.
IMAGE_ID=$(tar --numeric-owner -C "$ROOTFS" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "ENV SSL_CERT_FILE=$IMAGE_CA" \
        --change "ENV PIP_CERT=$IMAGE_CA" \
        --change "ENV REQUESTS_CA_BUNDLE=$IMAGE_CA" \
        --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
        --change 'ENV PYTHONUNBUFFERED=1' \
        --change "LABEL org.opencontainers.image.title=conveyor-python-base" \
        --change "LABEL org.opencontainers.image.description=\"debootstrap $SUITE minbase + python3 + venv + ca-certificates\"" \
        --change "LABEL org.opencontainers.image.created=$BUILT" \
        --change "LABEL io.conveyor.debian-suite=$SUITE" \
        --change 'CMD ["python3"]' \
        --message "conveyor base image: debootstrap $SUITE from $MIRROR" \
        - )

# ---- 8. smoke test, then tag -------------------------------------------------------
# Only a working image gets the tag. --network none: this must not need the network.
docker run --rm --network none --user "$APP_UID" "$IMAGE_ID" \
    python3 -c 'import ssl, venv, ensurepip, sqlite3, sys; print(sys.version.split()[0])' >"$WORK/pyver" ||
    die "smoke test of the imported image failed."
OLD_ID=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
docker tag "$IMAGE_ID" "$TAG"
if [[ -n $OLD_ID && $OLD_ID != "$IMAGE_ID" ]]; then
    # Drop the image this one replaces (fails harmlessly if a container uses it).
    docker image rm "$OLD_ID" >/dev/null 2>&1 || true
fi
IMAGE_ID=""  # tagged: the cleanup trap must no longer remove it

SIZE=$(docker image inspect --format '{{.Size}}' "$TAG")
log "built $TAG: python $(cat "$WORK/pyver"), $((SIZE / 1000000)) MB, in $((SECONDS - START))s"
printf '%s\n' "$TAG"
