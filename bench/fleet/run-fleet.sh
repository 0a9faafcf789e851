#!/usr/bin/env bash
# The fleet proof: 3 verifier processes behind nginx (gRPC, consistent hashing on x-specedge-session), 32 edges in
# mixed modes through nginx only, one verifier SIGKILLed (and restarted) and one drained with SIGTERM mid-run,
# Prometheus scraping the verifiers and the edges. Installs nginx and prometheus from Debian when missing.
#
#   bench/fleet/run-fleet.sh                 # the documented run: output in docs/results/fleet
#   bench/fleet/run-fleet.sh --short         # the CI variant: 8 edges, no Prometheus (about 10 s)
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ "${1:-}" != "--short" ]; then
  command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "fleet: installing ${need[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi

# SPECEDGE_BENCH_CONFIGURATION=Debug reuses the build .ci/run has just made instead of compiling everything again.
configuration="${SPECEDGE_BENCH_CONFIGURATION:-Release}"
dotnet build bench/SpecEdge.Bench -c "$configuration" -nologo -clp:ErrorsOnly
bench="dotnet bench/SpecEdge.Bench/bin/$configuration/net10.0/specedge-bench.dll"
if [ "${1:-}" = "--short" ]; then
  $bench fleet --edges 8 --generations 2 --tokens 16 --no-prometheus
else
  out=docs/results/fleet
  mkdir -p "$out"
  cmd="$bench fleet --edges 32 --generations 12 --tokens 48 --kill-at 5 --term-at 15 --out $out"
  { echo "command: bench/fleet/run-fleet.sh  ($cmd)"; echo; $cmd 2>"$out/progress.log"; } | tee "$out/report.md"
fi
