using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace SpecEdge.TestUtilities;

/// <summary>A test CA with a server certificate (127.0.0.1, localhost) and a client certificate, written as PEM files.</summary>
public sealed class TestCertificates
{
    private TestCertificates(string directory)
    {
        CaPath = Path.Combine(directory, "ca.pem");
        ServerCertPath = Path.Combine(directory, "server.pem");
        ServerKeyPath = Path.Combine(directory, "server.key");
        ClientCertPath = Path.Combine(directory, "client.pem");
        ClientKeyPath = Path.Combine(directory, "client.key");
        OtherClientCertPath = Path.Combine(directory, "other-client.pem");
        OtherClientKeyPath = Path.Combine(directory, "other-client.key");
    }

    public string CaPath { get; }

    public string ServerCertPath { get; }

    public string ServerKeyPath { get; }

    public string ClientCertPath { get; }

    public string ClientKeyPath { get; }

    /// <summary>A client certificate from a different CA (mutual TLS must refuse it).</summary>
    public string OtherClientCertPath { get; }

    public string OtherClientKeyPath { get; }

    public static TestCertificates Create(string directory)
    {
        Directory.CreateDirectory(directory);
        var files = new TestCertificates(directory);

        // One clock reading for every certificate: leaves must lie inside their CA's validity, to the second.
        var now = DateTimeOffset.UtcNow;
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var ca = CreateCa("CN=SpecEdge Test CA", caKey, now);
        File.WriteAllText(files.CaPath, ca.ExportCertificatePem());

        using var serverKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var serverRequest = new CertificateRequest("CN=127.0.0.1", serverKey, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        serverRequest.CertificateExtensions.Add(names.Build());
        serverRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        Issue(serverRequest, ca, files.ServerCertPath, files.ServerKeyPath, serverKey, now);

        using var clientKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var clientRequest = new CertificateRequest("CN=edge-device-1", clientKey, HashAlgorithmName.SHA256);
        clientRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
        Issue(clientRequest, ca, files.ClientCertPath, files.ClientKeyPath, clientKey, now);

        using var otherCaKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var otherCa = CreateCa("CN=Someone Else's CA", otherCaKey, now);
        using var otherKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var otherRequest = new CertificateRequest("CN=stranger", otherKey, HashAlgorithmName.SHA256);
        otherRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
        Issue(otherRequest, otherCa, files.OtherClientCertPath, files.OtherClientKeyPath, otherKey, now);
        return files;
    }

    private static X509Certificate2 CreateCa(string subject, ECDsa key, DateTimeOffset now)
    {
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        return request.CreateSelfSigned(now.AddDays(-2), now.AddDays(60));
    }

    private static void Issue(CertificateRequest request, X509Certificate2 issuer, string certPath, string keyPath, ECDsa key, DateTimeOffset now)
    {
        var serial = RandomNumberGenerator.GetBytes(12);
        using var certificate = request.Create(issuer, now.AddDays(-1), now.AddDays(30), serial);
        File.WriteAllText(certPath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
    }
}
