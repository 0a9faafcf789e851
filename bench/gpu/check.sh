#!/usr/bin/env bash
# The GPU check: run on a Linux machine with an NVIDIA GPU, CUDA 12/13 and cuDNN as ONNX Runtime 1.31's CUDA
# execution provider needs them (https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html).
#
#   bash bench/gpu/check.sh [out-dir]
#
# 1. The parity tests on CUDA: float32 and float16-compute graphs against the plain-C# reference, both graph forms,
#    the batch runner. The test projects build against Microsoft.ML.OnnxRuntime.Gpu.Linux (-p:SpecEdgeGpu=true) and
#    SPECEDGE_TEST_DEVICE=cuda makes every model load on CUDA with CPU fallback refused: a node without a CUDA kernel
#    fails the session, naming it.
# 2. The verify-step benchmark (bench profile) with the target on CUDA, in float32 and in float16 compute.
#
# Not run in CI (no GPU there); the README lists CUDA execution as open until this script has passed on a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-docs/results/gpu}"
mkdir -p "$out"
nvidia-smi | tee "$out/nvidia-smi.txt"

export SPECEDGE_TEST_DEVICE=cuda
dotnet test tests/Shared.Tests -c Release -p:SpecEdgeGpu=true \
  --filter "FullyQualifiedName~LanguageModelParityTests|FullyQualifiedName~HalfPrecisionParityTests|FullyQualifiedName~BatchRunnerTests|FullyQualifiedName~StagedModelTests" \
  --logger "console;verbosity=normal" 2>&1 | tee "$out/parity.txt"

dotnet build bench/SpecEdge.Bench -c Release -p:SpecEdgeGpu=true
bench=bench/SpecEdge.Bench/bin/Release/net10.0/specedge-bench.dll
for compute in f32 f16; do
  dotnet "$bench" profile --device cuda --compute "$compute" --name "gpu-$compute" --out "$out/profile-$compute.json" 2>&1 | tee "$out/profile-$compute.txt"
done
echo "GPU check passed; results in $out"
