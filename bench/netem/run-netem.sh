#!/usr/bin/env bash
# Real kernel links: two network namespaces joined by a veth pair, shaped by the kernel's traffic control, the
# verifier in one namespace and the edge in the other, running the latency matrix over the real (shaped) link.
#
#   sudo bench/netem/run-netem.sh [OUT_DIR] [PROFILE]
#
# Each link setting is a tc spec applied to both ends of the veth pair (so a round trip crosses it twice):
#   netem settings ("delay 10ms", "delay 25ms rate 10mbit", "delay 10ms loss 1%") need the kernel's sch_netem module;
#   tbf settings ("tbf rate 10mbit burst 32kbit latency 50ms") need only sch_tbf.
#   "TC | LINK" adds a delay in user space: kernel shaping TC plus specedge-link (LINK, e.g. rtt=50ms) running in the
#   edge's namespace, for kernels without sch_netem (the relay adds delay, the kernel shapes the rate).
# A setting the kernel cannot apply is recorded as skipped, with the reason, in OUT_DIR/summary.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-results/netem-$(date -u +%Y%m%d-%H%M%S)}
profile=${2:-real}
settings=(
  "netem delay 10ms"
  "netem delay 25ms rate 10mbit"
  "netem delay 10ms loss 1%"
  "tbf rate 10mbit burst 32kbit latency 50ms"
  "tbf rate 1mbit burst 16kbit latency 200ms"
  "tbf rate 10mbit burst 32kbit latency 50ms | rtt=25ms"
  "tbf rate 10mbit burst 32kbit latency 50ms | rtt=50ms,jitter=5ms"
)
modes=${MODES:-cloud,speculative,preemptive,conditional}
[ "$(id -u)" = 0 ] || { echo "run-netem: must run as root (network namespaces and tc)" >&2; exit 2; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "run-netem: needs iproute2 (ip, tc)" >&2; exit 2; }

for project in src/CloudVerifier src/LinkEmulator bench/SpecEdge.Bench; do
  dotnet build $project -c Release -nologo -v q >/dev/null || exit 1
done
mkdir -p "$out"
# Resolve (and if needed convert) the default pair once, outside the namespaces.
pair=$(dotnet bench/SpecEdge.Bench/bin/Release/net10.0/specedge-bench.dll pair-paths) || exit 1
target=$(sed -n 1p <<<"$pair"); draft=$(sed -n 2p <<<"$pair")

cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null
  [ -n "${relay_pid:-}" ] && kill "$relay_pid" 2>/dev/null
  ip netns del se-edge 2>/dev/null; ip netns del se-cloud 2>/dev/null
}
trap cleanup EXIT
cleanup
ip netns add se-edge && ip netns add se-cloud
ip link add se-veth-e type veth peer name se-veth-c
ip link set se-veth-e netns se-edge && ip link set se-veth-c netns se-cloud
ip -n se-edge addr add 10.77.0.1/24 dev se-veth-e && ip -n se-cloud addr add 10.77.0.2/24 dev se-veth-c
for ns in se-edge se-cloud; do ip -n $ns link set lo up; done
ip -n se-edge link set se-veth-e up && ip -n se-cloud link set se-veth-c up

ip netns exec se-cloud dotnet src/CloudVerifier/bin/Release/net10.0/specedge-cloud.dll --model "$target" \
  --urls http://10.77.0.2:50051 --allow-plaintext --threads 1 --profile "$profile" --Verifier:DefaultExitThreshold=0 \
  --Logging:LogLevel:Default=Warning 2> "$out/verifier.log" &
server_pid=$!
# Plaintext is allowed because the veth pair is private to this host's two namespaces.
up=0
for _ in $(seq 1 60); do
  kill -0 "$server_pid" 2>/dev/null || break
  ip netns exec se-edge bash -c 'exec 3<>/dev/tcp/10.77.0.2/50051' 2>/dev/null && { up=1; break; }
  sleep 1
done
[ $up = 1 ] || { echo "run-netem: the verifier did not come up:" >&2; cat "$out/verifier.log" >&2; exit 1; }

{
  echo "# Real kernel links (network namespaces + veth + tc)"
  echo
  echo "Command: \`sudo bench/netem/run-netem.sh $out $profile\` on $(uname -sr); verifier in namespace se-cloud (10.77.0.2), edge in se-edge (10.77.0.1); compute profile $profile."
  echo
} > "$out/summary.md"
for setting in "${settings[@]}"; do
  name=$(tr ' %/|=,' '__-_--' <<<"$setting" | tr -s '_')
  shaping=${setting%%|*}; shaping=${shaping% }
  link=""; [[ "$setting" == *"|"* ]] && { link=${setting#*|}; link=${link# }; }
  ok=1
  for end in "se-edge se-veth-e" "se-cloud se-veth-c"; do
    set -- $end
    if ! err=$(ip netns exec "$1" tc qdisc replace dev "$2" root $shaping 2>&1); then ok=0; break; fi
  done
  if [ $ok = 0 ]; then
    echo "- \`tc qdisc ... $shaping\`: skipped, the kernel refused it: $err" | tee -a "$out/summary.md"
    continue
  fi
  rtt=$(ip netns exec se-edge ping -c 5 -i 0.2 -q 10.77.0.2 2>/dev/null | sed -n 's/.*= [0-9.]*\/\([0-9.]*\)\/.*/\1/p')
  server=http://10.77.0.2:50051
  how="\`tc qdisc ... $shaping\` on both ends (ping round trip ${rtt:-?} ms)"
  if [ -n "$link" ]; then
    ip netns exec se-edge dotnet src/LinkEmulator/bin/Release/net10.0/specedge-link.dll --target 10.77.0.2:50051 \
      --listen 127.0.0.1:50061 --link "$link" >/dev/null 2>>"$out/relay.log" &
    relay_pid=$!
    for _ in $(seq 1 30); do ip netns exec se-edge bash -c 'exec 3<>/dev/tcp/127.0.0.1/50061' 2>/dev/null && break; sleep 0.5; done
    server=http://127.0.0.1:50061
    how="$how, plus specedge-link \`$link\` in the edge's namespace"
  fi
  echo "- $how: [report]($name/report.md)" | tee -a "$out/summary.md"
  ip netns exec se-edge dotnet bench/SpecEdge.Bench/bin/Release/net10.0/specedge-bench.dll matrix --server "$server" \
    --draft "$draft" --profile "$profile" --modes "$modes" --gamma 4 --prompts 1 --tokens 32 --out "$out/$name" || echo "  (matrix failed)" >> "$out/summary.md"
  if [ -n "$link" ]; then kill "$relay_pid" 2>/dev/null; wait "$relay_pid" 2>/dev/null; relay_pid=""; fi
  for end in "se-edge se-veth-e" "se-cloud se-veth-c"; do set -- $end; ip netns exec "$1" tc qdisc del dev "$2" root 2>/dev/null; done
done
find "$out" -maxdepth 1 -name "*.log" -empty -delete
echo "run-netem: wrote $out/summary.md"
