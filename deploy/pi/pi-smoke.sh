#!/usr/bin/env bash
# `make pi-smoke`: the runtime on an arm64 Debian userland (Raspberry Pi OS is Debian bookworm), under
# qemu-user emulation, against a cloud server on this host.
#
#   1. an arm64 Debian bookworm minbase userland with python3 (mmdebstrap; the tarball is cached
#      under $ECD_PI_CACHE, default ~/.cache/ecd/pi-rootfs, and built from nothing when missing);
#   2. the project's runtime-only wheel (py3-none-any, built here) installed there into /opt/ecd
#      with pip, arm64 wheels only (--only-binary=:all:): numpy, onnxruntime, grpcio, ...;
#   3. deploy/pi/smoke.py: a cloud server here, an edge node and a device agent in the userland
#      (arm64 code, emulated), the device streaming the held-out images end to end.
#
# Needs root (chroot, mounts), mmdebstrap, qemu-user-static and binfmt-support (installed with
# apt-get when missing). Every mount is undone on exit. Emulated timings say nothing about a Pi.
#
# Environment:
#   ECD_PI_CACHE          the cache folder (default ~/.cache/ecd/pi-rootfs)
#   ECD_PI_FRAMES         frames the device streams (default 360: every held-out image once)
#   ECD_PI_MIRROR         the Debian mirror mmdebstrap uses
#   ECD_PI_HOST_PYTHON    the host's cloud install: runs the cloud server, builds the wheel
#                         (default .venv-cloud/bin/python)
#   ECD_PI_SRC            the source tree the wheel is built from (default this checkout)
#   ECD_PI_CANNOT_RUN_OK  1: where this machine cannot run it, say so and exit 0 (see cannot())
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SUITE=bookworm
INCLUDE=python3,python3-venv,ca-certificates
MIRROR=${ECD_PI_MIRROR:-http://deb.debian.org/debian}
CACHE=${ECD_PI_CACHE:-${HOME:-/root}/.cache/ecd/pi-rootfs}
FRAMES=${ECD_PI_FRAMES:-360}
HOST_PYTHON=${ECD_PI_HOST_PYTHON:-$REPO/.venv-cloud/bin/python}
SRC=${ECD_PI_SRC:-$REPO}
# The cache key: what goes into the userland (the mirror does not change what is built).
KEY=$(printf '%s\n' "$SUITE" "$INCLUDE" minbase arm64 | sha256sum | cut -c1-12)
TARBALL=$CACHE/debian-$SUITE-arm64-minbase-$KEY.tar
T0=$(date +%s)

say() { printf 'pi-smoke: %s\n' "$*"; }
die() { printf 'pi-smoke: error: %s\n' "$*" >&2; exit 2; }
# This machine cannot run it (not root, no binfmt_misc): exit 3, or 0 with ECD_PI_CANNOT_RUN_OK=1
# (.ci/run sets it: it notes the skip and goes on; any other failure fails CI).
cannot() {
    printf 'pi-smoke: cannot run here: %s\n' "$*" >&2
    if [ "${ECD_PI_CANNOT_RUN_OK:-0}" = 1 ]; then echo "pi-smoke: SKIPPED"; exit 0; fi
    exit 3
}
elapsed() { echo $(( $(date +%s) - $1 )); }

[ "$(id -u)" = 0 ] || cannot "needs root (chroot and mounts); run it as root, e.g. sudo make pi-smoke"
[ -x "$HOST_PYTHON" ] || die "no host cloud install at $HOST_PYTHON (make .venv-cloud/.installed, or set ECD_PI_HOST_PYTHON)"

missing=()
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v update-binfmts >/dev/null || missing+=(binfmt-support)
[ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

WORK=$(mktemp -d /var/tmp/ecd-pi-smoke.XXXXXX)
ROOT=$WORK/rootfs
MOUNTS=()
BINFMT_MOUNTED=0

cleanup() {
    local rc=$? p m i
    trap - EXIT INT TERM
    # Processes still running inside this run's userland (it was unpacked for this run, so they are ours).
    for p in /proc/[0-9]*; do
        if [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ]; then
            kill -KILL "${p#/proc/}" 2>/dev/null || true
        fi
    done
    for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do
        m=${MOUNTS[i]}
        umount "$m" 2>/dev/null || { sleep 1; umount "$m" 2>/dev/null; } || umount -l "$m" || say "could not unmount $m"
    done
    if [ "$BINFMT_MOUNTED" = 1 ]; then
        umount /proc/sys/fs/binfmt_misc 2>/dev/null || true
    fi
    # Delete the work folder only when nothing is mounted below it any more.
    if findmnt -rn -o TARGET | grep -qF "$WORK/"; then
        say "left $WORK in place: something is still mounted below it"
    else
        rm -rf --one-file-system "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binfmt: the kernel hands arm64 binaries to qemu -------------------------------------------------
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
        || cannot "binfmt_misc cannot be mounted (no kernel support, or a container without the privilege)"
    BINFMT_MOUNTED=1
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 || cannot "update-binfmts could not register qemu-aarch64"
fi
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || die "qemu-aarch64 is registered without the F flag: the chroot would need the emulator inside it"

# --- 1. the userland -----------------------------------------------------------------------------------
mkdir -p "$CACHE"
t=$(date +%s)
if [ -f "$TARBALL" ] && [ -s "$TARBALL" ]; then
    USERLAND="from the cache"
    say "userland: cached $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
    say "userland: building arm64 Debian $SUITE minbase with $INCLUDE (mmdebstrap; minutes under emulation)"
    rm -rf --one-file-system "$TARBALL.part" "$TARBALL"  # leftovers of an interrupted build
    mmdebstrap --quiet --mode=root --format=tar --arch=arm64 --variant=minbase --include="$INCLUDE" \
        "$SUITE" "$TARBALL.part" "$MIRROR"
    mv "$TARBALL.part" "$TARBALL"
    USERLAND="built in $(elapsed "$t") s"
    say "userland: $USERLAND ($(du -h "$TARBALL" | cut -f1)), cached at $TARBALL"
fi
t=$(date +%s)
mkdir "$ROOT"
tar -C "$ROOT" -xf "$TARBALL"
say "userland: unpacked in $(elapsed "$t") s"

mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc")
# onnxruntime reads the CPU description at import; the host's x86 one crashes it under emulation.
# A Raspberry Pi 4's (Cortex-A72) stands in, and /sys is not mounted at all.
mount --bind "$HERE/cpuinfo-pi4" "$ROOT/proc/cpuinfo"; MOUNTS+=("$ROOT/proc/cpuinfo")
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
for bundle in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$bundle" ] && [ -s "$bundle" ]; then cp "$bundle" "$ROOT/etc/ssl/certs/host-ca-bundle.crt"; break; fi
done

# Run a command in the userland with a clean environment (the host's PIP_* settings point at
# folders that are not there).
in_pi() {
    QEMU_CPU=cortex-a72 chroot "$ROOT" /usr/bin/env -i \
        PATH=/opt/ecd/bin:/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU=cortex-a72 \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt \
        ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} \
        ${https_proxy:+https_proxy=$https_proxy} ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} \
        "$@"
}
say "userland: $(in_pi /usr/bin/uname -m), $(in_pi /usr/bin/python3 --version), $(in_pi /usr/bin/sed -n 's/^PRETTY_NAME=//p' /etc/os-release)"

# --- 2. the runtime-only wheel, arm64 wheels for its dependencies ---------------------------------------
t=$(date +%s)
mkdir -p "$WORK/src" "$ROOT/tmp/wheels"
# Built from a copy: setuptools stages into ./build, which other builds in the checkout use too.
(cd "$SRC" && cp -r pyproject.toml README.md ecd ecd_cli models device_agent edge_node cloud_server scheduling research "$WORK/src/")
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"$HOST_PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$ROOT/tmp/wheels" "$WORK/src" >/dev/null
WHEEL=$(cd "$ROOT/tmp/wheels" && ls ecd_runtime-*.whl)
say "wheel: $WHEEL built in $(elapsed "$t") s"
# The venv with the dependencies is cached too, keyed on the userland and the wheel's requirements
# (and rebuilt after 7 days, so new releases of the dependencies get in).
REQS=$("$HOST_PYTHON" - "$ROOT/tmp/wheels/$WHEEL" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    print("\n".join(sorted(l for l in z.read(meta).decode().splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l)))
PY
)
VENV_TAR=$CACHE/venv-$(printf '%s\n%s\n' "$KEY" "$REQS" | sha256sum | cut -c1-12).tar
find "$CACHE" -maxdepth 1 -name 'venv-*.tar' \( -mtime +7 -o ! -name "$(basename "$VENV_TAR")" \) -delete
t=$(date +%s)
if [ -s "$VENV_TAR" ]; then
    tar -C "$ROOT" -xf "$VENV_TAR"
    in_pi /opt/ecd/bin/pip install --quiet --no-deps --no-index --force-reinstall "/tmp/wheels/$WHEEL"
    DEPS="dependencies from the cache"
else
    in_pi /usr/bin/python3 -m venv /opt/ecd
    in_pi /opt/ecd/bin/pip install --quiet --only-binary=:all: "/tmp/wheels/$WHEEL"
    tar -C "$ROOT" -cf "$VENV_TAR.part" opt/ecd && mv "$VENV_TAR.part" "$VENV_TAR"
    DEPS="arm64 wheels from the index"
fi
in_pi /opt/ecd/bin/pip check >/dev/null || die "pip check failed in the userland: $(in_pi /opt/ecd/bin/pip check)"
say "pip: installed in the userland in $(elapsed "$t") s ($DEPS): $(in_pi /opt/ecd/bin/pip list --format=freeze 2>/dev/null \
    | grep -iE '^(ecd-runtime|numpy|onnxruntime|grpcio|protobuf)==' | tr '\n' ' ')"

# --- 3. the system ---------------------------------------------------------------------------------------
"$HOST_PYTHON" -u "$HERE/smoke.py" --root "$ROOT" --frames "$FRAMES" --work "$WORK"
say "total wall time $(elapsed "$T0") s (userland $USERLAND; $DEPS)"
