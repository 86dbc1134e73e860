//! TLS pieces shared by the HTTPS listener, Redis, Postgres and the admin CLI:
//!
//! * one crypto provider, ring (the one reqwest already uses), installed as the
//!   process default so libraries that build their own rustls configs (the
//!   redis crate, pgwire-replication) agree with ours;
//! * PEM loading whose errors name the config setting;
//! * recognising a TLS failure (bad server certificate, client certificate
//!   refused) in an error chain, so callers can say which setting to fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Read {
        setting: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting}: {} holds no PEM certificate (expected a `-----BEGIN CERTIFICATE-----` block)", path.display())]
    NoCertificate { setting: String, path: PathBuf },
    #[error("{setting}: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted)", path.display())]
    NoKey { setting: String, path: PathBuf },
    #[error("{setting}: {message}")]
    Invalid { setting: String, message: String },
}

/// The crypto provider every TLS config of the router uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Make ring the process-wide default provider (idempotent). Needed because
/// both ring and aws-lc-rs are compiled in (pgwire-replication enables
/// rustls' default features), and rustls then refuses to guess.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting: setting.into(),
        path: path.into(),
        source,
    })
}

/// Every certificate in a PEM file (a chain: leaf first).
pub fn load_certs(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            setting: setting.into(),
            message: format!("{} is not valid PEM: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            setting: setting.into(),
            path: path.into(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(setting: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(setting, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            setting: setting.into(),
            path: path.into(),
        },
        e => TlsError::Invalid {
            setting: setting.into(),
            message: format!("{} is not a valid PEM private key: {e}", path.display()),
        },
    })
}

/// A root store holding every certificate of a PEM file.
pub fn load_roots(setting: &str, path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(setting, path)? {
        roots.add(c).map_err(|e| TlsError::Invalid {
            setting: setting.into(),
            message: format!(
                "{} holds a certificate that cannot be a trust anchor: {e}",
                path.display()
            ),
        })?;
    }
    Ok(roots)
}

/// The HTTPS listener's config: certificate chain + key, ALPN h2 and http/1.1.
pub fn server_config(
    cert_setting: &str,
    cert_file: &Path,
    key_setting: &str,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs(cert_setting, cert_file)?;
    let key = load_key(key_setting, key_file)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            setting: cert_setting.into(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid {
            setting: key_setting.into(),
            message: format!(
                "the key in {} does not fit the certificate in {}: {e}",
                key_file.display(),
                cert_file.display()
            ),
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client config that trusts exactly the leaf certificate in `cert_file`
/// (any host name). The admin CLI uses it to reach the router it shares a
/// config with: it reads the same certificate the listener serves.
pub fn pinned_client_config(
    setting: &str,
    cert_file: &Path,
) -> Result<rustls::ClientConfig, TlsError> {
    let leaf = load_certs(setting, cert_file)?.remove(0);
    let provider = provider();
    let verifier = Arc::new(PinnedCert {
        leaf,
        provider: provider.clone(),
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            setting: setting.into(),
            message: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[derive(Debug)]
struct PinnedCert {
    leaf: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What went wrong in a TLS handshake, when an error is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// We rejected the server's certificate (unknown CA, wrong name, expired…).
    ServerCertificate,
    /// The server rejected us (no or unknown client certificate).
    ClientCertificate,
    /// Any other handshake failure (protocol mismatch, not TLS at all…).
    Handshake,
}

/// Classify `err` (and its sources) as a TLS failure. Looks for a
/// `rustls::Error`, also inside `io::Error`s; libraries that hide the
/// source chain are recognised by rustls' own message texts.
pub fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(classify_rustls(r));
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(f) = tls_failure(inner) {
                return Some(f);
            }
        }
        cur = e.source();
    }
    classify_text(&chain_text(err))
}

fn classify_rustls(e: &rustls::Error) -> TlsFailure {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(_) => TlsFailure::ServerCertificate,
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied,
        ) => TlsFailure::ClientCertificate,
        _ => TlsFailure::Handshake,
    }
}

fn classify_text(s: &str) -> Option<TlsFailure> {
    let s = s.to_ascii_lowercase();
    if s.contains("invalid peer certificate") {
        Some(TlsFailure::ServerCertificate)
    } else if s.contains("received fatal alert")
        && [
            "badcertificate",
            "certificaterequired",
            "unknownca",
            "certificateunknown",
            "certificateexpired",
            "accessdenied",
        ]
        .iter()
        .any(|a| s.contains(a))
    {
        Some(TlsFailure::ClientCertificate)
    } else if s.contains("received fatal alert")
        || s.contains("received corrupt message")
        || s.contains("peer is incompatible")
        || s.contains("peer misbehaved")
    {
        Some(TlsFailure::Handshake)
    } else {
        None
    }
}

/// `err: source: source…` in one line.
pub fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(tls_failure(&e), Some(TlsFailure::ServerCertificate));
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert_eq!(tls_failure(&e), Some(TlsFailure::ClientCertificate));
        let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(tls_failure(&e), None);
    }

    #[test]
    fn missing_files_name_the_setting() {
        let e = load_certs("server.tls.cert_file", Path::new("/nonexistent/cert.pem")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("server.tls.cert_file: cannot read /nonexistent/cert.pem"),
            "{m}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not pem at all\n").unwrap();
        assert!(matches!(
            load_certs("x", &p),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(matches!(load_key("y", &p), Err(TlsError::NoKey { .. })));
    }
}
