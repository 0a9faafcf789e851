#!/usr/bin/env bash
# The edge as a Jetson runs it: a self-contained linux-arm64 publish, run under qemu-user on this x64 machine, generating
# from the default draft in edge mode (no verifier). Compares its tokens with the x64 build's for the same command.
#
#   sudo tools/arm64/run-edge-qemu.sh [OUT_FILE]       # default: docs/results/arm64/edge-qemu-run.txt
#
# Installs (Debian 12, as root): qemu-user and the arm64 multiarch libc, libstdc++ and libssl the .NET runtime loads.
# qemu-user 7.2 shows the guest the host's x86 /proc/cpuinfo, which ONNX Runtime's CPU detection cannot parse (the
# process dies with SIGSEGV while loading the model); the run therefore gets an arm64 /proc/cpuinfo (a four-core
# Cortex-A78AE, the Jetson Orin's CPU), bind-mounted in a private mount namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-docs/results/arm64/edge-qemu-run.txt}"
publish=artifacts/publish/edge-linux-arm64

if ! command -v qemu-aarch64 >/dev/null 2>&1 || ! dpkg -s libstdc++6:arm64 libssl3:arm64 >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  dpkg --add-architecture arm64
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends qemu-user libc6:arm64 libstdc++6:arm64 libssl3:arm64 >/dev/null
fi

dotnet publish src/EdgeClient -c Release -r linux-arm64 --self-contained -o "$publish" --nologo -v quiet
dotnet build src/EdgeClient -c Release --nologo -v quiet

cpuinfo=$(mktemp)
for cpu in 0 1 2 3; do
  printf 'processor\t: %s\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd42\nCPU revision\t: 1\n\n' "$cpu" >> "$cpuinfo"
done

args=(generate --mode edge --draft models/draft --prompt "In the beginning" --max-new-tokens 48 --threads 1 --json)
arm_cache=$(mktemp -d)
x64_cache=$(mktemp -d)
mkdir -p "$(dirname "$out")"
{
  echo "# tools/arm64/run-edge-qemu.sh on $(date -u +%Y-%m-%d): the linux-arm64 edge under $(qemu-aarch64 --version | head -1)"
  echo
  echo "\$ SPECEDGE_CACHE=<empty> qemu-aarch64 -L / $publish/specedge-edge ${args[*]}"
  echo "  (in unshare -m, with an arm64 /proc/cpuinfo bind-mounted; the first run converts the draft checkpoint, under qemu too)"
} > "$out"
start=$(date +%s%N)
SPECEDGE_CACHE="$arm_cache" unshare -m sh -c "mount --bind '$cpuinfo' /proc/cpuinfo && exec qemu-aarch64 -L / '$publish/specedge-edge' \"\$@\"" sh "${args[@]}" > "$arm_cache.json" 2> "$arm_cache.err"
end=$(date +%s%N)
{
  echo "  exit 0, $(( (end - start) / 1000000 )) ms wall (conversion and generation, emulated)"
  echo
  cat "$arm_cache.json"
  echo
  echo "\$ SPECEDGE_CACHE=<empty> dotnet src/EdgeClient/bin/Release/net10.0/specedge-edge.dll ${args[*]}    # x64, for comparison"
} >> "$out"
SPECEDGE_CACHE="$x64_cache" dotnet src/EdgeClient/bin/Release/net10.0/specedge-edge.dll "${args[@]}" > "$x64_cache.json" 2> /dev/null
ids() { tr -d ' \n' < "$1" | grep -o '"token_ids":\[[0-9,]*\]'; }
arm_ids=$(ids "$arm_cache.json")
x64_ids=$(ids "$x64_cache.json")
if [ "$arm_ids" = "$x64_ids" ]; then verdict="identical token ids on linux-arm64 (emulated) and linux-x64"; else verdict="token ids DIFFER between linux-arm64 and linux-x64"; fi
echo "  $verdict" >> "$out"
rm -rf "$cpuinfo" "$arm_cache" "$x64_cache" "$arm_cache.json" "$arm_cache.err" "$x64_cache.json"
cat "$out"
[ "$arm_ids" = "$x64_ids" ]
