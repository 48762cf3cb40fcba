#!/usr/bin/env bash
# Benchmarks of `jobhost run`: log throughput, pickup latency, idle cost, stop,
# schedule lateness, API latency, message queues.
#
#   bench/run.sh [--quick] [--no-build] [--keep] [--json FILE] [throughput] [pickup] [idle] [stop] [lateness] [api] [queue] [cluster]
#
# With no section names every section but `cluster` runs (about 6 minutes after the build;
# --quick about a minute and a half); `cluster` (PostgreSQL, opt-in) runs only when named.
# BENCH_ONLY="pickup idle" picks sections too. See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

build=1
keep=0
args=()
sections=()
while (($#)); do
    case "$1" in
        -h | --help)
            sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        --quick) args+=(--quick) ;;
        --no-build) build=0 ;;
        --keep) keep=1 ;;
        --json)
            [[ $# -ge 2 ]] || { echo "run.sh: --json needs a file name" >&2; exit 2; }
            args+=(--json "$(realpath -m "$2")")
            shift
            ;;
        throughput | pickup | idle | stop | lateness | api | queue | cluster) sections+=("$1") ;;
        *)
            echo "run.sh: unknown argument '$1' (try --help)" >&2
            exit 2
            ;;
    esac
    shift
done
if ((${#sections[@]} == 0)) && [[ -n ${BENCH_ONLY:-} ]]; then
    read -r -a sections <<<"$BENCH_ONLY"
fi
[[ ${BENCH_NO_BUILD:-0} == 1 ]] && build=0

if ((build)); then
    echo "building: cargo build --release --locked" >&2
    (cd "$root" && cargo build --release --locked)
fi
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
bin=$target/release/jobhost
[[ -x $bin ]] || { echo "run.sh: $bin not found: build it (cargo build --release --locked)" >&2; exit 1; }

tmp=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/jobhost-bench.XXXXXX")
# Every process the benchmark starts carries this in its environment (this shell does not).
tag="jobhost-bench-$$-${RANDOM}${RANDOM}"

py=
sweep() {
    # Last line of defence: whatever still carries the tag is killed, then the temp folder goes.
    local n=0 round pid env
    for round in 1 2 3 4 5; do
        local found=0
        for env in /proc/[0-9]*/environ; do
            pid=${env#/proc/}
            pid=${pid%/environ}
            [[ $pid == "$$" ]] && continue
            if grep -qzxF -- "JOBHOST_BENCH_TAG=$tag" "$env" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null && { found=1; n=$((n + 1)); }
            fi
        done
        ((found)) || break
        sleep 0.2
    done
    ((n == 0)) || echo "run.sh: killed $n leftover process(es)" >&2
    if ((keep)); then
        echo "run.sh: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
forward() {
    trap - INT TERM HUP
    if [[ -n $py ]]; then
        kill -TERM "$py" 2>/dev/null || true
        wait "$py" 2>/dev/null || true
    fi
    exit "$1"
}
trap sweep EXIT
trap 'forward 130' INT
trap 'forward 143' TERM
trap 'forward 129' HUP

# In the background so that a signal to this shell is handled at once (a foreground
# child would delay the trap until it ends); bench.py handles SIGINT itself.
python3 "$here/bench.py" --bin "$bin" --tmp "$tmp" --tag "$tag" "${args[@]}" "${sections[@]}" &
py=$!
rc=0
wait "$py" || rc=$?
py=
exit "$rc"
