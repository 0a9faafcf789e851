#!/usr/bin/env bash
# Packs the libraries (SpecEdge.Shared, SpecEdge.Client, SpecEdge.Verifier), the four CLIs as dotnet tools, and makes
# the self-contained publishes the container recipes copy
# (deploy/containers). Not part of every CI run (about two minutes); run it before a release.
#
#   bash tools/package.sh [OUT_DIR]      # default: artifacts/
#
# Then: dotnet tool install -g --add-source OUT_DIR/tools SpecEdge.Edge.Tool   (and .Cloud, .Models, .Link)
#       dotnet add package SpecEdge.Client --source OUT_DIR/packages            (or SpecEdge.Verifier)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-artifacts}"
rm -rf "$out"
for project in src/Shared src/Client src/Verifier; do
  dotnet pack "$project" -c Release -o "$out/packages" --nologo -v quiet
done
for project in src/EdgeClient src/CloudVerifier src/ModelTools src/LinkEmulator; do
  dotnet pack "$project" -c Release -o "$out/tools" --nologo -v quiet
done

# What the images copy: the edge for linux-x64 and linux-arm64 (CPU natives), the verifier for linux-x64 (CUDA natives
# with their CPU kernels).
dotnet publish src/EdgeClient -c Release -r linux-x64 --self-contained -o "$out/publish/edge-linux-x64" --nologo -v quiet
dotnet publish src/EdgeClient -c Release -r linux-arm64 --self-contained -o "$out/publish/edge-linux-arm64" --nologo -v quiet
dotnet publish src/CloudVerifier -c Release -r linux-x64 --self-contained -o "$out/publish/cloud-linux-x64" --nologo -v quiet

# The x64 publishes run here, as the images would run them: the verifier publish serves the default target, the edge
# publish generates through it. (The arm64 edge runs under qemu-user: tools/arm64/run-edge-qemu.sh.)
test -f "$out/publish/edge-linux-x64/libonnxruntime.so"
port=50177
"$out/publish/cloud-linux-x64/specedge-cloud" --model models/target --urls "http://127.0.0.1:$port" --Logging:LogLevel:Default=Warning &
verifier=$!
trap 'kill $verifier 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  "$out/publish/edge-linux-x64/specedge-edge" generate --server "http://127.0.0.1:$port" --draft models/draft \
    --prompt "In the beginning" --max-new-tokens 16 --mode conditional > "$out/publish/edge-through-cloud.txt" 2>&1 && break
  sleep 0.5
done
echo "the x64 publishes, edge through verifier: $(cat "$out/publish/edge-through-cloud.txt")"
kill $verifier

# An app that takes SpecEdge only from the packed libraries: it embeds the verifier and asks through the IChatClient.
consumer=$(mktemp -d)
cp tools/package-consumer/Program.cs "$consumer/"
cp tools/package-consumer/consumer.csproj.txt "$consumer/consumer.csproj"
cat > "$consumer/nuget.config" <<NUGET
<configuration><packageSources><add key="specedge" value="$(realpath "$out/packages")" /></packageSources></configuration>
NUGET
version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props)
ort=$(sed -n 's:.*<OnnxRuntimeVersion>\(.*\)</OnnxRuntimeVersion>.*:\1:p' Directory.Packages.props)
# The packages just packed, not an older build of the same version from NuGet's cache.
cache=$(dotnet nuget locals global-packages --list | sed 's/^global-packages: //')
rm -rf "$cache/specedge.shared" "$cache/specedge.client" "$cache/specedge.verifier"
dotnet run --project "$consumer" -p:SpecEdgeVersion="$version" -p:OnnxRuntimeVersion="$ort" -- "$PWD/models/target" "$PWD/models/draft" 50178 \
  | tee "$out/consumer.txt"
rm -rf "$consumer"
test -f "$out/publish/edge-linux-arm64/libonnxruntime.so"
test -f "$out/publish/cloud-linux-x64/libonnxruntime_providers_cuda.so"
ls -1 "$out/packages" "$out/tools"
echo "libraries in $out/packages, tools in $out/tools, publishes in $out/publish"
