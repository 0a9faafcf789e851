using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using SpecEdge.CloudVerifier.Configuration;

namespace SpecEdge.CloudVerifier.Security;

/// <summary>Kestrel's HTTPS settings from <see cref="TlsOptions"/>: the server certificate, and mutual TLS against a client CA.</summary>
internal static class TlsSetup
{
    public static void Configure(HttpsConnectionAdapterOptions https, TlsOptions tls)
    {
        https.ServerCertificate = X509Certificate2.CreateFromPemFile(tls.CertificatePath!, tls.KeyPath);
        if (!tls.RequireClientCertificate)
        {
            return;
        }

        if (string.IsNullOrEmpty(tls.ClientCaPath))
        {
            throw new InvalidOperationException("Verifier:Tls:RequireClientCertificate needs Verifier:Tls:ClientCaPath (the CA client certificates must chain to)");
        }

        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(tls.ClientCaPath));
        https.ClientCertificateMode = ClientCertificateMode.RequireCertificate;
        https.ClientCertificateValidation = (certificate, _, _) =>
        {
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(ca);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            return chain.Build(certificate);
        };
    }
}
