#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md, in about ten minutes on two cores:
#   1. in process: the layer against a bare router, the strongest hand-written middleware and the
#      other baselines, with criterion and then in interleaved passes (with probes of axum's own
#      cost for layers on a route); overheads also as shares of the strongest baseline's;
#   2. heap bytes per cached key, for one million keys;
#   3. loopback HTTP throughput with wrk (apt-get install wrk), server on one worker thread,
#      server and wrk pinned to CPUs 0 and 1 when taskset (util-linux) is there;
#   4. one cache-miss resolution on each store (needs PostgreSQL, as the tests do);
#   5. callgrind instruction counts per request (apt-get install valgrind), which stay the same
#      however busy the machine is, with and without SHA-256's compression function; and per
#      look at a SQLite store's invalidation log, beside a cache-miss lookup.
# Run it on an otherwise idle machine: the timings in 1 and 3 are only as quiet as the machine.
#
#   scripts/bench.sh passes [RUNS]
# runs only step 1's interleaved passes, RUNS times (default 10), and prints each variant's median
# over the runs: BENCHMARKS.md's time figures are these, and its "before" figures this script run
# at the commit it names.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = passes ]; then
    runs=${2:-10}
    rows=$(mktemp)
    trap 'rm -f "$rows"' EXIT
    for run in $(seq "$runs"); do
        echo "run $run of $runs" >&2
        # A filter that matches no criterion benchmark leaves only the interleaved passes. Their
        # table's rows: variant, over bare, ratio, range, best over, best ratio, share, best share.
        cargo bench --bench layer -- no-criterion-benchmark 2>/dev/null |
            sed -n '/^variant  *over bare/,/^(bare/p' |
            awk 'NF >= 9 && $1 != "variant" && $1 !~ /^[(]/' >>"$rows"
    done
    median() { # of the numbers on standard input
        sort -g | awk '{ v[NR] = $1 } END { print (v[int((NR + 1) / 2)] + v[int(NR / 2) + 1]) / 2 }'
    }
    field() { # field $2 (negative: from the end) of variant $1's rows, without a trailing x
        awk -v v="$1" -v c="$2" '$1 == v { f = (c > 0 ? $c : $(NF + 1 + c)); sub(/x$/, "", f); print f }' \
            "$rows" | median
    }
    printf '%-30s %8s %8s %8s   (medians of %d runs)\n' variant ratio share best "$runs"
    for variant in $(awk '!seen[$1]++ { print $1 }' "$rows"); do
        printf '%-30s %7.2fx %8.2f %8.2f\n' "$variant" \
            "$(field "$variant" 4)" "$(field "$variant" -2)" "$(field "$variant" -1)"
    done
    exit 0
fi

echo "== 1. in process (criterion)"
cargo bench --bench layer

echo "== 2. memory per cached key"
cargo bench --bench memory

echo "== 3. loopback throughput (wrk)"
cargo bench --bench loopback

echo "== 4. one cache-miss resolution per store (PostgreSQL at DATABASE_URL)"
cargo bench --bench stores --all-features

echo "== 5. instructions per request (callgrind)"
if ! command -v valgrind >/dev/null; then
    echo "valgrind is not installed; skipping"
    exit 0
fi
# What watching a SQLite file for other processes' changes costs per look when nothing changed,
# beside one cache-miss lookup on the same file (both: 2,000 minus 1,000 runs, per run).
watch=$(cargo bench --bench watch_profile --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p')
watch_count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$watch" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : //p'
}
for variant in poll resolve; do
    echo "sqlite $variant: $(( ($(watch_count "$variant" 2000) - $(watch_count "$variant" 1000)) / 1000 )) instructions"
done
# The crate is built as one codegen unit here: with the default sixteen, a change in one module
# moves which generic code lands in which unit, and so what is inlined along the whole request
# path (134 instructions per request between two commits that differ in one file). One unit
# keeps counts comparable across commits.
profile=$(cargo bench --config 'profile.bench.package."tower-api-key".codegen-units=1' \
    --bench profile --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p')
count() { # instructions of one run of variant $1 with $2 requests; further arguments go to valgrind
    local variant=$1 requests=$2
    shift 2
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" "$profile" "$variant" "$requests" 2>&1 |
        sed -n 's/.*Collected : //p'
}
per_request() { # the difference between 11,000 and 1,000 requests leaves out start-up
    local variant=$1
    shift
    echo $(( ($(count "$variant" 11000 "$@") - $(count "$variant" 1000 "$@")) / 10000 ))
}
# Valgrind does not emulate the SHA extensions, so SHA-256's compression function runs in
# software, about 3,500 instructions where the machine takes about 50 ns. Every variant that
# hashes calls it once per request; the last columns leave it out (callgrind stops counting
# inside it), the rest of hashing (padding, buffering) stays counted.
no_sha=(--toggle-collect='sha2::sha256::compress256' --collect-atstart=yes)
printf '%-19s %12s %10s %12s %10s\n' variant instructions 'over bare' 'without SHA' 'share'
bare=0
strongest=0
declare -A over over_without
for variant in bare strongest handwritten static noscope noscope_usage_off noscope_prometheus \
    ratekey ratekey_fields_off ratekey_owner extractor handlerscope routescope handleridentity handlerpassthrough routepassthrough unknown \
    malformed; do
    all=$(per_request "$variant")
    without=$(( $(per_request "$variant" "${no_sha[@]}") - bare ))
    [ "$variant" = bare ] && bare=$all && without=0
    [ "$variant" = strongest ] && strongest=$without
    # The overhead over bare, without SHA-256, as a share of the strongest baseline's.
    share=$(awk -v a="$without" -v s="$strongest" 'BEGIN { if (s > 0) printf "%.2f", a / s }')
    printf '%-19s %12d %+10d %+12d %10s\n' "$variant" "$all" "$((all - bare))" "$without" "$share"
    over[$variant]=$((all - bare))
    over_without[$variant]=$without
done
# What recording usage costs a cache hit, as a share of the layer's own overhead without it.
recording=$(( over[noscope] - over[noscope_usage_off] ))
awk -v r="$recording" -v a="${over[noscope_usage_off]}" \
    -v rw="$(( over_without[noscope] - over_without[noscope_usage_off] ))" \
    -v aw="${over_without[noscope_usage_off]}" 'BEGIN {
    printf "usage recording per cache hit: %+d instructions, %.3f of the layer'"'"'s own overhead", r, r / a
    printf " (%.3f without SHA-256'"'"'s compression)\n", rw / aw
}'
# What the in-process rate limiter costs a cache hit (a key with a rate no request reaches), as a
# share of the layer's own overhead for the same hit of a key without a rate (target: under 0.15).
for variant in ratekey ratekey_fields_off ratekey_owner; do
    awk -v v="$variant" -v r="$(( over[$variant] - over[noscope] ))" -v a="${over[noscope]}" \
        -v rw="$(( over_without[$variant] - over_without[noscope] ))" \
        -v aw="${over_without[noscope]}" 'BEGIN {
        printf "rate limit per cache hit (%s): %+d instructions, %.3f of the layer'"'"'s own overhead", v, r, r / a
        printf " (%.3f without SHA-256'"'"'s compression)\n", rw / aw
    }'
done
