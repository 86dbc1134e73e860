//! TLS for both Postgres connections of a CDC source: the SQL connection
//! (tokio-postgres + tokio-postgres-rustls) and the replication connection
//! (pgwire-replication's own rustls client).
//!
//! Settings are libpq's, in the source URL: `sslmode` (`disable`, `allow`,
//! `prefer` (default), `require`, `verify-ca`, `verify-full`), `sslrootcert`
//! (CA file; default for verification: the Mozilla roots), `sslcert` +
//! `sslkey` (client certificate). They are taken out of the URL before
//! tokio-postgres parses it (it knows neither `verify-*` nor the file
//! parameters). As in libpq: `sslmode` is ignored for Unix sockets, `allow`
//! behaves like `prefer`, and `require` with `sslrootcert` verifies the chain
//! like `verify-ca`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use switchyard_core::tls::{self, TlsError};

/// libpq `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }
}

/// What the server certificate is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// The TLS settings of one source (from its URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl PgTls {
    /// Split `url` into the URL tokio-postgres gets (without the TLS
    /// parameters) and the TLS settings.
    pub fn split(url: &str) -> Result<(String, PgTls), String> {
        let (rest, pairs) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            split_uri(url)
        } else {
            split_kv(url)?
        };
        let mut tls = PgTls {
            mode: SslMode::Prefer,
            root_cert: None,
            cert: None,
            key: None,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "sslmode" => tls.mode = SslMode::parse(&v)?,
                "sslrootcert" => tls.root_cert = Some(PathBuf::from(v)),
                "sslcert" => tls.cert = Some(PathBuf::from(v)),
                "sslkey" => tls.key = Some(PathBuf::from(v)),
                _ => unreachable!("only TLS keys are split off"),
            }
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return Err("sslcert and sslkey go together (a client certificate and its key)".into());
        }
        Ok((rest, tls))
    }

    /// Over a Unix socket there is no TLS (libpq ignores sslmode there too).
    pub fn for_host(&self, unix_socket: bool) -> PgTls {
        let mut t = self.clone();
        if unix_socket {
            t.mode = SslMode::Disable;
        }
        t
    }

    fn verify(&self) -> Verify {
        match self.mode {
            SslMode::VerifyFull => Verify::ChainAndName,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::Require | SslMode::Prefer if self.root_cert.is_some() => Verify::Chain,
            _ => Verify::Nothing,
        }
    }

    /// The mode tokio-postgres is given (it knows disable/prefer/require;
    /// verification is done by our rustls config).
    pub fn tokio_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as T;
        match self.mode {
            SslMode::Disable => T::Disable,
            SslMode::Prefer => T::Prefer,
            _ => T::Require,
        }
    }

    /// The rustls client config for the SQL connection. `setting` names the
    /// URL for error messages (`sources.<name>.url`).
    pub fn client_config(&self, setting: &str) -> Result<rustls::ClientConfig, TlsError> {
        tls::install_crypto_provider();
        let provider = tls::provider();
        let roots = match &self.root_cert {
            Some(p) => tls::load_roots(&format!("{setting} (sslrootcert)"), p)?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let invalid = |e: rustls::Error| TlsError::Invalid {
            setting: setting.into(),
            message: e.to_string(),
        };
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Invalid {
            setting: format!("{setting} (sslrootcert)"),
            message: e.to_string(),
        })?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.verify() {
            Verify::ChainAndName => webpki,
            Verify::Chain => Arc::new(ChainOnly(webpki)),
            Verify::Nothing => Arc::new(NoVerify(provider.clone())),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let certs = tls::load_certs(&format!("{setting} (sslcert)"), c)?;
                let key = tls::load_key(&format!("{setting} (sslkey)"), k)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| TlsError::Invalid {
                        setting: format!("{setting} (sslkey)"),
                        message: format!("the key does not fit the certificate: {e}"),
                    })
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    /// The replication connection's TLS settings. The host is also the SNI
    /// name, so `verify-full` works with IP addresses (checked against the
    /// certificate's IP names) as it does on the SQL connection.
    pub fn replication(&self, host: &str) -> pgwire_replication::TlsConfig {
        use pgwire_replication::SslMode as W;
        let mode = match (self.mode, self.verify()) {
            (SslMode::Disable, _) => W::Disable,
            (_, Verify::ChainAndName) => W::VerifyFull,
            (_, Verify::Chain) => W::VerifyCa,
            (SslMode::Prefer, Verify::Nothing) => W::Prefer,
            (_, Verify::Nothing) => W::Require,
        };
        pgwire_replication::TlsConfig {
            mode,
            ca_pem_path: self.root_cert.clone(),
            sni_hostname: Some(host.to_string()),
            client_cert_pem_path: self.cert.clone(),
            client_key_pem_path: self.key.clone(),
        }
    }

    /// Check the files now (config validation), naming the setting.
    pub fn check_files(&self, setting: &str) -> Result<(), TlsError> {
        if self.mode == SslMode::Disable {
            return Ok(());
        }
        self.client_config(setting).map(|_| ())
    }
}

/// `url` with relative `sslrootcert` / `sslcert` / `sslkey` made absolute
/// against `base`, the config file's directory (every path in the config
/// resolves against it). Both URL forms; anything else is left as written.
pub fn resolve_paths(url: &str, base: &std::path::Path) -> String {
    const FILES: [&str; 3] = ["sslrootcert", "sslcert", "sslkey"];
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return switchyard_core::config::resolve_url_paths(url, &FILES, base);
    }
    let Ok((rest, pairs)) = split_kv(url) else {
        return url.to_string(); // reported by validation
    };
    let relative = |k: &str, v: &str| {
        FILES.contains(&k) && !v.is_empty() && std::path::Path::new(v).is_relative()
    };
    if !pairs.iter().any(|(k, v)| relative(k, v)) {
        return url.to_string();
    }
    let mut out = rest;
    for (k, v) in pairs {
        let v = if relative(&k, &v) {
            base.join(&v).to_string_lossy().into_owned()
        } else {
            v
        };
        let quoted = v.replace('\\', "\\\\").replace('\'', "\\'");
        out.push_str(&format!(" {k}='{quoted}'"));
    }
    out
}

/// `postgres://…?a=b&sslmode=x` → (`postgres://…?a=b`, [(sslmode, x)]).
fn split_uri(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), Vec::new());
    };
    let mut keep = Vec::new();
    let mut tls = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let key = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
        if TLS_KEYS.contains(&key.as_ref()) {
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            tls.push((key.into_owned(), v));
        } else {
            keep.push(part);
        }
    }
    let rest = if keep.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", keep.join("&"))
    };
    (rest, tls)
}

/// libpq `key=value` form (values may be single-quoted, `\` escapes).
fn split_kv(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut keep = Vec::new();
    let mut tls = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(format!("`{key}` has no value (expected key=value)"));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            loop {
                match it.next() {
                    Some('\\') => value.extend(it.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of `{key}`")),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    it.next();
                    value.extend(it.next());
                } else {
                    value.push(c);
                    it.next();
                }
            }
        }
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            keep.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((keep.join(" "), tls))
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as C;
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` / `require` without `sslrootcert`: encrypted, the certificate is
/// not checked (libpq's semantics; use verify-full against active attackers).
/// Handshake signatures are still verified.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_uri() {
        let (rest, t) = PgTls::split(
            "postgres://u:p@db:5432/crm?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/crm?application_name=x");
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert!(rest.parse::<tokio_postgres::Config>().is_ok());

        let (rest, t) = PgTls::split("postgres://u@db/crm").unwrap();
        assert_eq!(
            (rest.as_str(), t.mode),
            ("postgres://u@db/crm", SslMode::Prefer)
        );

        let (rest, t) = PgTls::split("postgresql://u@db/crm?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), t.mode),
            ("postgresql://u@db/crm", SslMode::Require)
        );
    }

    #[test]
    fn tls_parameters_leave_key_value_strings() {
        let (rest, t) = PgTls::split(
            "host=db user=sy password='a \\'q\\' b' sslmode = verify-ca sslrootcert='/a b/ca.pem' dbname=crm",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.mode, SslMode::VerifyCa);
        assert_eq!(t.root_cert, Some(PathBuf::from("/a b/ca.pem")));
        let c: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(c.get_dbname(), Some("crm"));
        assert_eq!(c.get_password(), Some(&b"a 'q' b"[..]));
    }

    #[test]
    fn modes_map_like_libpq() {
        let t = |url: &str| PgTls::split(url).unwrap().1;
        let w = |url: &str| t(url).replication("db").mode;
        use pgwire_replication::SslMode as W;
        assert_eq!(w("postgres://u@db/x?sslmode=disable"), W::Disable);
        assert_eq!(w("postgres://u@db/x"), W::Prefer);
        assert_eq!(w("postgres://u@db/x?sslmode=allow"), W::Prefer);
        assert_eq!(w("postgres://u@db/x?sslmode=require"), W::Require);
        assert_eq!(
            w("postgres://u@db/x?sslmode=require&sslrootcert=/ca.pem"),
            W::VerifyCa
        );
        assert_eq!(w("postgres://u@db/x?sslmode=verify-ca"), W::VerifyCa);
        assert_eq!(w("postgres://u@db/x?sslmode=verify-full"), W::VerifyFull);
        assert_eq!(
            t("postgres://u@db/x?sslmode=verify-full")
                .for_host(true)
                .mode,
            SslMode::Disable
        );
        assert!(PgTls::split("postgres://u@db/x?sslmode=sometimes").is_err());
        assert!(PgTls::split("postgres://u@db/x?sslcert=/c.pem").is_err());
    }
}
