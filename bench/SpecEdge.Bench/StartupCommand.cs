using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Synthetic;
using SpecEdge.Shared.Runtime;

namespace SpecEdge.Bench;

/// <summary>
/// <c>startup</c>: what a large target costs before it serves, side by side in one run: bf16→f16 weight conversion
/// with the element-by-element code against the SIMD code, the conversion of a ~1B-parameter synthetic target, and
/// its load with every file hashed (what every start did before) against the stamp check (size and modification time).
/// </summary>
internal static class StartupCommand
{
    public static Command Create()
    {
        var layers = new Option<int>("--layers") { Description = "Layers of the synthetic target (20: about 1.07 B parameters).", DefaultValueFactory = _ => 20 };
        var loads = new Option<int>("--loads") { Description = "Loads of each kind, interleaved.", DefaultValueFactory = _ => 3 };
        var command = new Command("startup", "Start-up cost of a ~1B-parameter synthetic target: conversion (scalar vs SIMD element conversion) and load (hash everything vs stamp).") { layers, loads };
        command.SetAction(parse =>
        {
            // Element conversion, bf16 -> f32 -> f16, as conversion does for every weight: 64 M elements a pass.
            const int Elements = 64 << 20;
            var raw = new byte[Elements * 2];
            new Random(1).NextBytes(raw);
            for (var i = 1; i < raw.Length; i += 2)
            {
                raw[i] &= 0x3F; // moderate exponents: no float16 overflow
            }

            var floats = new float[Elements];
            var half = new byte[Elements * 2];
            var scalar = new List<double>();
            var simd = new List<double>();
            for (var pass = 0; pass < 4; pass++)
            {
                var watch = Stopwatch.StartNew();
                TensorDTypes.ToFloat32Scalar(TensorDType.BFloat16, raw, floats);
                TensorDTypes.FromFloat32Scalar(TensorDType.Float16, floats, half);
                scalar.Add(watch.Elapsed.TotalMilliseconds);
                watch.Restart();
                TensorDTypes.ToFloat32(TensorDType.BFloat16, raw, floats);
                TensorDTypes.FromFloat32(TensorDType.Float16, floats, half);
                simd.Add(watch.Elapsed.TotalMilliseconds);
            }

            var scalarMs = scalar.Skip(1).Min();
            var simdMs = simd.Skip(1).Min();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"bf16 -> f32 -> f16 of {Elements / 1e6:F1} M elements (best of 3 after a warm-up, interleaved): element by element {scalarMs:F0} ms ({Elements * 2 / scalarMs / 1e6:F2} GB/s of bf16), SIMD {simdMs:F0} ms ({Elements * 2 / simdMs / 1e6:F2} GB/s); SIMD takes {simdMs / scalarMs:F2}x the time."));

            var spec = new SyntheticModelSpec { Layers = parse.GetValue(layers), Hidden = 2048, Heads = 16, KvHeads = 8, Intermediate = 5632, Vocab = 32000, Seed = 11, MaxPositions = 1024 };
            var root = Path.Combine(BenchModels.CacheRoot, $"startup-{spec.Layers}");
            var checkpoint = Path.Combine(root, "checkpoint");
            var converted = Path.Combine(root, "converted");
            if (Directory.Exists(root))
            {
                Directory.Delete(root, recursive: true);
            }

            var watchAll = Stopwatch.StartNew();
            SyntheticCheckpoint.Write(checkpoint, spec, TensorDType.BFloat16);
            var writeMs = watchAll.Elapsed.TotalMilliseconds;
            watchAll.Restart();
            ModelConverter.Convert(checkpoint, converted, new ConversionOptions { Exits = [spec.Layers / 4], WeightsDtype = TensorDType.Float16 });
            var convertMs = watchAll.Elapsed.TotalMilliseconds;
            var manifest = ModelManifest.Load(converted);
            var bytes = manifest.Files.Values.Sum(f => f.Bytes);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"target: {spec.ParameterCount / 1e9:F2} B parameters, bf16 checkpoint written in {writeMs / 1000:F1} s, converted (f16 weights, exit after layer {spec.Layers / 4}, both graph forms, every file hashed once) in {convertMs / 1000:F1} s: {bytes / 1e9:F2} GB in {manifest.Files.Count} files."));

            var full = new List<double>();
            var stamped = new List<double>();
            for (var i = 0; i < parse.GetValue(loads); i++)
            {
                var watch = Stopwatch.StartNew();
                ModelManifest.Load(converted).VerifyFiles(converted, trustStamp: false);
                using (LanguageModel.Load(converted, new RuntimeOptions { VerifyHashes = false, IntraOpThreads = 2 }))
                {
                    full.Add(watch.Elapsed.TotalMilliseconds);
                }

                watch.Restart();
                using (LanguageModel.Load(converted, new RuntimeOptions { IntraOpThreads = 2 }))
                {
                    stamped.Add(watch.Elapsed.TotalMilliseconds);
                }
            }

            Console.WriteLine();
            Console.WriteLine("| load | ms (each) | median ms |");
            Console.WriteLine("|---|---|---|");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| hash every file, then load (every start before) | {string.Join(", ", full.Select(v => v.ToString("F0", CultureInfo.InvariantCulture)))} | {Stats.Median(full):F0} |"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| stamp check, then load (now) | {string.Join(", ", stamped.Select(v => v.ToString("F0", CultureInfo.InvariantCulture)))} | {Stats.Median(stamped):F0} |"));
            Console.WriteLine();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Start-up now takes {Stats.Median(stamped) / Stats.Median(full):F2}x the time it took; the hashing alone was {(Stats.Median(full) - Stats.Median(stamped)) / 1000:F1} s of it."));
            Directory.Delete(root, recursive: true);
            return 0;
        });
        return command;
    }
}
