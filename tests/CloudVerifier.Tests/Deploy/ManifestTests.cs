using System.Diagnostics.Metrics;
using k8s;
using k8s.Models;
using Microsoft.Extensions.DependencyInjection;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Telemetry;
using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests.Deploy;

/// <summary>
/// The Kubernetes manifests under <c>deploy/k8s</c>, checked by a tool rather than by eye: every object loads strictly
/// into Kubernetes' own models (the official client's; an unknown or misplaced field fails), and the objects agree with
/// each other and with the verifier (its switches, health services, ports and metric names).
/// </summary>
public sealed class ManifestTests
{
    private static readonly string Folder = Path.Combine(TestPlaces.RepositoryRoot(), "deploy", "k8s");

    [Fact]
    public void EveryManifest_LoadsStrictly_IntoKubernetesModels()
    {
        var files = Directory.GetFiles(Folder, "*.yaml").Where(f => !f.EndsWith("prometheus-adapter-rules.yaml", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(files);
        foreach (var file in files)
        {
            var objects = KubernetesYaml.LoadAllFromString(File.ReadAllText(file), typeMap: null, strict: true);
            Assert.NotEmpty(objects);
            // Every object is named (a manifest without metadata.name is refused by the API server, not by the loader).
            Assert.All(objects, o => Assert.False(string.IsNullOrEmpty(((IMetadata<V1ObjectMeta>)o).Metadata?.Name), $"an unnamed object in {Path.GetFileName(file)}"));
        }
    }

    [Fact]
    public void StrictLoading_RefusesAMisspelledField()
    {
        var yaml = File.ReadAllText(Path.Combine(Folder, "verifier.yaml")).Replace("readinessProbe:", "readynessProbe:", StringComparison.Ordinal);

        Assert.ThrowsAny<Exception>(() => KubernetesYaml.LoadAllFromString(yaml, typeMap: null, strict: true));
    }

    [Fact]
    public void VerifierObjects_AgreeWithEachOtherAndWithTheVerifier()
    {
        var objects = Load("verifier.yaml");
        var deployment = objects.OfType<V1Deployment>().Single();
        var service = objects.OfType<V1Service>().Single();
        var budget = objects.OfType<V1PodDisruptionBudget>().Single();
        var autoscaler = objects.OfType<V2HorizontalPodAutoscaler>().Single();
        var podLabels = deployment.Spec.Template.Metadata.Labels;
        var container = deployment.Spec.Template.Spec.Containers.Single();

        // The verifier accepts every switch the pod gives it.
        Assert.Null(VerifierHost.UnknownSwitch(container.Args));
        var grpcPort = container.Ports.Single(p => p.Name == "grpc").ContainerPort;
        var metricsPort = container.Ports.Single(p => p.Name == "metrics").ContainerPort;
        Assert.Equal(50051, grpcPort);
        Assert.Contains($"http://+:{metricsPort}/", container.Args);

        // Probes: readiness on the Verifier service's health, liveness on "liveness", both on the gRPC port.
        Assert.Equal("specedge.v1.Verifier", container.ReadinessProbe.Grpc.Service);
        Assert.Equal(grpcPort, container.ReadinessProbe.Grpc.Port);
        Assert.Equal(VerifierReadiness.LivenessService, container.LivenessProbe.Grpc.Service);
        Assert.Equal(grpcPort, container.LivenessProbe.Grpc.Port);

        // A GPU each, requested and limited.
        Assert.Equal("1", container.Resources.Requests["nvidia.com/gpu"].ToString());
        Assert.Equal("1", container.Resources.Limits["nvidia.com/gpu"].ToString());

        // Termination leaves room for the drain delay and the shutdown grace.
        var args = container.Args.ToList();
        var drain = int.Parse(args[args.IndexOf("--drain-delay") + 1], System.Globalization.CultureInfo.InvariantCulture);
        var grace = int.Parse(args[args.IndexOf("--grace") + 1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(deployment.Spec.Template.Spec.TerminationGracePeriodSeconds > drain + grace, "terminationGracePeriodSeconds leaves no room for the drain delay and the grace");

        // The headless Service, the budget and the Deployment's selector all select the pods.
        Assert.Equal("None", service.Spec.ClusterIP);
        Assert.True(Selects(service.Spec.Selector, podLabels));
        Assert.True(Selects(budget.Spec.Selector.MatchLabels, podLabels));
        Assert.True(Selects(deployment.Spec.Selector.MatchLabels, podLabels));
        Assert.Contains(service.Spec.Ports, p => p.Port == grpcPort);

        // The autoscaler scales this Deployment on a metric the verifier exports (OpenTelemetry name → Prometheus name).
        Assert.Equal(deployment.Metadata.Name, autoscaler.Spec.ScaleTargetRef.Name);
        Assert.Equal("Deployment", autoscaler.Spec.ScaleTargetRef.Kind);
        var metric = autoscaler.Spec.Metrics.Single().Pods.Metric.Name;
        Assert.Equal("specedge_verifier_queue_depth", metric);
        Assert.Contains(metric, File.ReadAllText(Path.Combine(Folder, "prometheus-adapter-rules.yaml")));
        // The verifier publishes it (an up-down counter, which Prometheus shows under the same name). Only this test's
        // meter is watched: other tests' verifiers publish theirs on other threads meanwhile.
        using var provider = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var factory = provider.GetRequiredService<IMeterFactory>();
        var published = new List<string>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (ReferenceEquals(instrument.Meter.Scope, factory))
                {
                    published.Add(instrument.Name.Replace('.', '_'));
                }
            },
        };
        listener.Start();
        var metrics = new VerifierMetrics(factory);
        metrics.ObserveScheduler(() => 0, () => default);
        Assert.Contains(metric, published);
    }

    [Fact]
    public void Balancer_HashesOnTheEdgesSessionHeader_AndReachesTheHeadlessService()
    {
        var objects = Load("balancer.yaml");
        var config = objects.OfType<V1ConfigMap>().Single().Data["nginx.conf"];
        var verifierService = Load("verifier.yaml").OfType<V1Service>().Single();

        // nginx exposes a request header as $http_ + its name in lower case with dashes as underscores.
        var header = "$http_" + VerifierTracing.SessionHeader.Replace('-', '_');
        Assert.Contains($"hash {header} consistent;", config);
        Assert.Contains($"server {verifierService.Metadata.Name}.default.svc.cluster.local:50051 resolve", config);
        Assert.Contains("grpc_pass grpc://verifiers;", config);
        var deployment = objects.OfType<V1Deployment>().Single();
        Assert.Equal(objects.OfType<V1ConfigMap>().Single().Metadata.Name, deployment.Spec.Template.Spec.Volumes.Single().ConfigMap.Name);
        Assert.True(Selects(objects.OfType<V1Service>().Single().Spec.Selector, deployment.Spec.Template.Metadata.Labels));
    }

    private static List<object> Load(string file) => KubernetesYaml.LoadAllFromString(File.ReadAllText(Path.Combine(Folder, file)), typeMap: null, strict: true);

    private static bool Selects(IDictionary<string, string> selector, IDictionary<string, string> labels) =>
        selector.Count > 0 && selector.All(kv => labels.TryGetValue(kv.Key, out var value) && value == kv.Value);

}
