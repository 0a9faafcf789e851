using Microsoft.Extensions.Logging;

namespace SpecEdge.Shared.Runtime;

internal static partial class RuntimeLog
{
    [LoggerMessage(EventId = 1001, Level = LogLevel.Warning, Message = "CUDA execution provider could not load ({Reason}); model {Model} runs on the CPU instead")]
    public static partial void CudaFallback(ILogger logger, string model, string reason);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Information, Message = "Loaded model {Model}: {Stages} stage(s), {Layers} layers, vocabulary {Vocab}, device {Device}")]
    public static partial void ModelLoaded(ILogger logger, string model, int stages, int layers, int vocab, ExecutionDevice device);
}
