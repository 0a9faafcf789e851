using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Runtime;

/// <summary>
/// A converted model loaded into ONNX Runtime: one <see cref="InferenceSession"/> per stage, shared by every
/// <see cref="DecodeContext"/> made from it (each context holds one sequence's KV cache). A draft model has one stage;
/// a staged target has one per exit plus the last.
/// </summary>
public sealed class LanguageModel : IDisposable
{
    private readonly InferenceSession[] _sessions;
    private OrtAllocator? _cacheAllocator;
    private OrtMemoryInfo? _cudaMemory;

    private LanguageModel(string directory, ModelManifest manifest, LlamaConfig config, InferenceSession[] sessions, RuntimeOptions options, ExecutionDevice device, string? fallbackReason, ITextTokenizer tokenizer)
    {
        Directory = directory;
        Manifest = manifest;
        Config = config;
        _sessions = sessions;
        Options = options;
        Device = device;
        FallbackReason = fallbackReason;
        Tokenizer = tokenizer;
        MaxSequenceLength = Math.Min(options.MaxSequenceLength ?? config.LongestSequence, config.LongestSequence);
        HeadStages = [.. Enumerable.Range(0, manifest.Stages.Count)];
    }

    /// <summary>The converted model folder.</summary>
    public string Directory { get; }

    /// <summary>Its manifest.</summary>
    public ModelManifest Manifest { get; }

    /// <summary>Its configuration.</summary>
    public LlamaConfig Config { get; }

    /// <summary>How it was loaded.</summary>
    public RuntimeOptions Options { get; }

    /// <summary>Its tokenizer.</summary>
    public ITextTokenizer Tokenizer { get; }

    /// <summary>Where the model actually runs (the CPU when CUDA was asked for and could not load).</summary>
    public ExecutionDevice Device { get; }

    /// <summary>Why CUDA was not used although asked for; null otherwise.</summary>
    public string? FallbackReason { get; }

    /// <summary>The vocabulary size.</summary>
    public int VocabSize => Manifest.VocabSize;

    /// <summary>The longest sequence a context holds (the options' limit or the model's maximum).</summary>
    /// <remarks>A Mistral model's sliding window caps it: within the window, whole-context attention is exact.</remarks>
    public int MaxSequenceLength { get; }

    /// <summary>The stages, in order.</summary>
    public IReadOnlyList<StageManifest> Stages => Manifest.Stages;

    /// <summary>The stages that end with a head (every stage of a converted model does: exits, then the final head).</summary>
    public IReadOnlyList<int> HeadStages { get; }

    internal InferenceSession Session(int stage) => _sessions[stage];

    /// <summary>
    /// Where KV caches are allocated: the CUDA device's memory when the model runs on CUDA (bound through IOBinding, so
    /// the cache never crosses to the host), else host memory.
    /// </summary>
    internal OrtAllocator CacheAllocator => _cacheAllocator ??= Device == ExecutionDevice.Cuda
        ? new OrtAllocator(_sessions[0], _cudaMemory = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, Options.DeviceId, OrtMemType.Default))
        : OrtAllocator.DefaultInstance;

    /// <summary>Loads a converted model folder.</summary>
    /// <exception cref="ModelFormatException">The folder is not a converted model or a file is missing.</exception>
    /// <exception cref="ModelIntegrityException">A file does not match its manifest hash.</exception>
    public static LanguageModel Load(string directory, RuntimeOptions? options = null, ILogger? logger = null)
    {
        options ??= new RuntimeOptions();
        logger ??= NullLogger.Instance;
        if (options.MaxStepTokens < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxStepTokens, "MaxStepTokens must be at least 1");
        }

        var manifest = ModelManifest.Load(directory);
        if (options.VerifyHashes)
        {
            manifest.VerifyFiles(directory);
        }

        var config = manifest.LlamaConfig;
        var tokenizer = TokenizerFiles.Load(directory, config.VocabSize, config.BosTokenId, config.EosTokenIds);
        var device = options.Device;
        string? fallbackReason = null;
        var sessions = new InferenceSession[manifest.Stages.Count];
        try
        {
            for (var s = 0; s < sessions.Length; s++)
            {
                var stage = manifest.Stages[s];
                var file = options.Attention == AttentionForm.Batched
                    ? stage.BatchedFile ?? throw new ModelFormatException(directory, "the folder has no batched graphs (converted by an older SpecEdge): convert the checkpoint again")
                    : stage.File;
                var path = Path.Combine(directory, file);
                using var sessionOptions = CreateSessionOptions(options, ref device, ref fallbackReason);
                try
                {
                    sessions[s] = new InferenceSession(path, sessionOptions);
                }
                catch (OnnxRuntimeException ex) when (device == ExecutionDevice.Cuda)
                {
                    throw new ModelFormatException(path, $"not every node of the graph can run on CUDA, and SpecEdge does not split a graph between the GPU and the CPU ({ex.Message.Split('\n')[0]}); convert with --compute f16 for a GPU, or run with --device cpu", ex);
                }
                catch (OnnxRuntimeException ex)
                {
                    throw new ModelFormatException(path, $"ONNX Runtime cannot load the graph ({ex.Message})", ex);
                }
            }
        }
        catch
        {
            foreach (var session in sessions)
            {
                session?.Dispose();
            }

            throw;
        }

        if (fallbackReason is not null)
        {
            RuntimeLog.CudaFallback(logger, directory, fallbackReason);
        }

        RuntimeLog.ModelLoaded(logger, directory, sessions.Length, config.NumHiddenLayers, manifest.VocabSize, device);
        return new LanguageModel(directory, manifest, config, sessions, options, device, fallbackReason, tokenizer);
    }

    /// <summary>A new, empty sequence with its own KV cache.</summary>
    /// <exception cref="InvalidOperationException">The model was loaded in the batched form (use a <see cref="BatchRunner"/>).</exception>
    public DecodeContext CreateContext(int? maxSequenceLength = null) => Options.Attention == AttentionForm.SharedBuffer
        ? new(this, Math.Min(maxSequenceLength ?? MaxSequenceLength, MaxSequenceLength))
        : throw new InvalidOperationException("the model was loaded with batched graphs: run it through a BatchRunner");

    /// <summary>Bytes of KV cache one context of <paramref name="maxSequenceLength"/> tokens holds.</summary>
    public long KvBytesPerContext(int maxSequenceLength) =>
        2L * Config.NumHiddenLayers * Config.NumKeyValueHeads * Config.HeadDim * maxSequenceLength * ComputeElementSize;

    /// <summary>Bytes of one element of the compute type (activations and KV cache).</summary>
    public int ComputeElementSize => ComputeElementType == TensorElementType.Float16 ? 2 : 4;

    /// <summary>
    /// The element type of the KV cache and of the hidden state between stages: float32, or float16 for a model
    /// converted with float16 compute. Logits are float32 either way.
    /// </summary>
    public TensorElementType ComputeElementType => Manifest.ComputeDtype == "f16" ? TensorElementType.Float16 : TensorElementType.Float;

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_cudaMemory is not null)
        {
            // The device allocator made on the CUDA memory info (the default host allocator is not ours to free).
            _cacheAllocator?.Dispose();
        }

        _cudaMemory?.Dispose();
        foreach (var session in _sessions)
        {
            session.Dispose();
        }
    }

    private static SessionOptions CreateSessionOptions(RuntimeOptions options, ref ExecutionDevice device, ref string? fallbackReason)
    {
        var sessionOptions = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            InterOpNumThreads = 1,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        if (options.IntraOpThreads > 0)
        {
            sessionOptions.IntraOpNumThreads = options.IntraOpThreads;
        }

        if (device == ExecutionDevice.Cuda)
        {
            try
            {
                sessionOptions.AppendExecutionProvider_CUDA(options.DeviceId);

                // Every node on the GPU or no session: a graph split between CUDA and the CPU would copy activations
                // across PCIe at every node boundary, silently slower. ONNX Runtime then refuses to create the session
                // and names the node that has no CUDA kernel.
                sessionOptions.AddSessionConfigEntry("session.disable_cpu_ep_fallback", "1");
            }
            catch (Exception ex) when (ex is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
            {
                // Loud, not silent: the caller logs it, and the model reports the device it really runs on.
                device = ExecutionDevice.Cpu;
                fallbackReason = ex.Message.Split('\n')[0];
            }
        }

        return sessionOptions;
    }
}
