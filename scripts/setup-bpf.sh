#!/usr/bin/env bash
# Makes this host able to load kerno-otel's BPF programs (bcc on tracepoints), idempotently.
#
# What it does, each step only when it is not done yet:
#   1. apt installs python3-bpfcc (bcc and its Python module) and linux-headers-amd64;
#   2. where /lib/modules/$(uname -r)/build is missing (a kernel with no headers package
#      of its own), links build and source to the installed headers' arch and common trees;
#   3. mounts tracefs at /sys/kernel/tracing when it is not mounted;
#   4. makes bcc's Python module importable from the project's venv (VENV, default .venv)
#      without copying it and without exposing the rest of Debian's dist-packages: a .pth
#      file names a directory that holds only a symlink to bcc.
# Needs root. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-bpf: needs root (apt, /lib/modules, mount)" >&2
    exit 1
fi

say() { echo "setup-bpf: $*" >&2; }

# 1. packages
missing=()
for pkg in python3-bpfcc linux-headers-amd64; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. kernel headers for the running kernel
release="$(uname -r)"
modules="/lib/modules/$release"
# A usable build tree has the kernel's generated headers (an arch tree's include/generated).
if [ ! -d "$modules/build/include/generated" ]; then
    # The newest installed amd64 headers package: linux-headers-<ver>-amd64 (arch tree)
    # and the linux-headers-<ver>-common it depends on.
    arch_tree="$(find /usr/src -maxdepth 1 -type d -name 'linux-headers-*-amd64' | sort -V | tail -n 1)"
    if [ -z "$arch_tree" ]; then
        say "no linux-headers-*-amd64 tree under /usr/src"
        exit 1
    fi
    common_tree="${arch_tree%-amd64}-common"
    if [ ! -d "$common_tree" ]; then
        say "no $common_tree beside $arch_tree"
        exit 1
    fi
    mkdir -p "$modules"
    ln -sfn "$arch_tree" "$modules/build"
    ln -sfn "$common_tree" "$modules/source"
    say "linked $modules/build -> $arch_tree, source -> $common_tree"
fi

# 3. tracefs
if [ ! -e /sys/kernel/tracing/events ]; then
    mkdir -p /sys/kernel/tracing
    mount -t tracefs tracefs /sys/kernel/tracing
    say "mounted tracefs at /sys/kernel/tracing"
fi

# 4. bcc importable from the venv, and nothing else of Debian's dist-packages
venv="${VENV:-.venv}"
if [ -x "$venv/bin/python" ]; then
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    shim="$site/_kerno_bcc"
    mkdir -p "$shim"
    ln -sfn /usr/lib/python3/dist-packages/bcc "$shim/bcc"
    echo "$shim" > "$site/kerno-bcc.pth"
    "$venv/bin/python" -c 'import bcc' || { say "bcc still not importable from $venv"; exit 1; }
else
    say "no venv at $venv: skipped making bcc importable (set VENV=path)"
fi
say "ready: kernel $release, bcc $(dpkg-query -W -f='${Version}' python3-bpfcc)"
