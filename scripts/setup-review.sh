#!/usr/bin/env bash
# What the reviewer-facing tests need from Debian, installed when missing:
# jq (benchmarks/bench_query.py's baseline) and chromium (tests/test_review_html.py
# opens the --html report in it, headless). Idempotent: a second run installs nothing.
# Needs root to install; without root it only says what is missing (the tests that
# need a tool skip with the reason).
set -euo pipefail

missing=()
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-review: not root; not installing ${missing[*]} (tests needing them will skip)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
