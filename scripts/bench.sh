#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md, in about six minutes on two cores:
#   1. in process: the layer against a bare router and hand-written baselines, with criterion and
#      then in interleaved passes;
#   2. heap bytes per cached key, for one million keys;
#   3. loopback HTTP throughput with wrk (apt-get install wrk), server on one worker thread,
#      server and wrk pinned to CPUs 0 and 1 when taskset (util-linux) is there;
#   4. one cache-miss resolution on each store (needs PostgreSQL, as the tests do);
#   5. callgrind instruction counts per request (apt-get install valgrind), which stay the same
#      however busy the machine is.
# Run it on an otherwise idle machine: the timings in 1 and 3 are only as quiet as the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

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
cargo bench --bench profile --no-run 2>/dev/null
profile=$(ls -t target/release/deps/profile-* | grep -v '\.d$' | head -n 1)
count() { # instructions of one run of variant $1 with $2 requests
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$profile" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : //p'
}
bare=0
for variant in bare static handwritten noscope extractor hit handlerscope unknown malformed; do
    # The difference between 11,000 and 1,000 requests leaves out start-up.
    per_request=$(( ($(count "$variant" 11000) - $(count "$variant" 1000)) / 10000 ))
    [ "$variant" = bare ] && bare=$per_request
    printf '%-14s %7d instructions per request  (+%d over bare)\n' \
        "$variant" "$per_request" "$((per_request - bare))"
done
