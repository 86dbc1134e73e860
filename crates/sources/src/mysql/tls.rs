//! TLS of a MySQL/MariaDB source (both connections: SQL and binlog).
//!
//! Settings are the `mysql` client's, as URL parameters: `ssl-mode`
//! (`DISABLED` (default), `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`;
//! case-insensitive, `_` or `-`), `ssl-ca` (CA file; default for
//! verification: the Mozilla roots), `ssl-cert` + `ssl-key` (client
//! certificate). They are taken out of the URL before mysql_async parses it.
//! As in the `mysql` client, `REQUIRED` with `ssl-ca` verifies the chain like
//! `VERIFY_CA`. `PREFERRED` (try TLS, fall back to plain) is refused: the
//! driver cannot fall back, and silently unencrypted is not a mode we want.
//! The files are loaded with the router's PEM helpers (`switchyard_core::tls`) so a bad
//! file is reported at config validation with the setting's name.

use std::path::PathBuf;

use mysql_async::{ClientIdentity, SslOpts};

use switchyard_core::tls::{self, TlsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "DISABLED" => SslMode::Disabled,
            "REQUIRED" => SslMode::Required,
            "VERIFY_CA" => SslMode::VerifyCa,
            "VERIFY_IDENTITY" => SslMode::VerifyIdentity,
            "PREFERRED" => return Err(
                "ssl-mode PREFERRED is not supported (no silent fallback to plain text): use REQUIRED, VERIFY_CA or VERIFY_IDENTITY, or DISABLED".into(),
            ),
            other => {
                return Err(format!(
                    "ssl-mode `{other}` is not one of DISABLED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                ))
            }
        })
    }
}

/// The TLS settings of one source (from its URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyTls {
    pub mode: SslMode,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

const TLS_KEYS: [&str; 4] = ["ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"];

impl MyTls {
    /// Split `url` into the URL mysql_async gets (without the TLS
    /// parameters) and the TLS settings.
    pub fn split(url: &str) -> Result<(String, MyTls), String> {
        let mut tls = MyTls {
            mode: SslMode::Disabled,
            ca: None,
            cert: None,
            key: None,
        };
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), tls));
        };
        let mut keep = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_encoding::percent_decode_str(k)
                .decode_utf8_lossy()
                .replace('_', "-");
            if !TLS_KEYS.contains(&key.as_str()) {
                keep.push(part);
                continue;
            }
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            match key.as_str() {
                "ssl-mode" => tls.mode = SslMode::parse(&v)?,
                "ssl-ca" => tls.ca = Some(PathBuf::from(v)),
                "ssl-cert" => tls.cert = Some(PathBuf::from(v)),
                _ => tls.key = Some(PathBuf::from(v)),
            }
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(
                "ssl-cert and ssl-key go together (a client certificate and its key)".into(),
            );
        }
        if tls.mode == SslMode::Disabled && (tls.ca.is_some() || tls.cert.is_some()) {
            return Err(
                "ssl-ca / ssl-cert are set but ssl-mode is DISABLED (the default): set ssl-mode=VERIFY_IDENTITY (or VERIFY_CA, REQUIRED)".into(),
            );
        }
        let rest = if keep.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", keep.join("&"))
        };
        Ok((rest, tls))
    }

    /// mysql_async's TLS options (`None`: plain connection). `setting` names
    /// the URL in errors (`sources.<name>.url`).
    pub fn ssl_opts(&self, setting: &str) -> Result<Option<SslOpts>, TlsError> {
        if self.mode == SslMode::Disabled {
            return Ok(None);
        }
        tls::install_crypto_provider();
        let mut o = SslOpts::default();
        if let Some(ca) = &self.ca {
            // Loaded (and checked) here; handed over as PEM.
            let certs = tls::load_certs(&format!("{setting} (ssl-ca)"), ca)?;
            tls::load_roots(&format!("{setting} (ssl-ca)"), ca)?;
            let pem = certs
                .iter()
                .map(|c| pem_block("CERTIFICATE", c.as_ref()))
                .collect::<String>();
            o = o
                .with_root_certs(vec![pem.into_bytes().into()])
                .with_disable_built_in_roots(true);
        }
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            tls::load_certs(&format!("{setting} (ssl-cert)"), c)?;
            tls::load_key(&format!("{setting} (ssl-key)"), k)?;
            o = o.with_client_identity(Some(ClientIdentity::new(
                c.clone().into(),
                k.clone().into(),
            )));
        }
        o = match self.mode {
            SslMode::Required if self.ca.is_none() => o.with_danger_accept_invalid_certs(true),
            SslMode::Required | SslMode::VerifyCa => o.with_danger_skip_domain_validation(true),
            _ => o,
        };
        Ok(Some(o))
    }

    /// Check the files now (config validation), naming the setting.
    pub fn check_files(&self, setting: &str) -> Result<(), TlsError> {
        self.ssl_opts(setting).map(|_| ())
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_takes_tls_parameters_out() {
        let (rest, t) = MyTls::split(
            "mysql://u:p@h:3306/db?ssl-mode=verify_identity&ssl-ca=%2Fca.pem&prefer_socket=false",
        )
        .unwrap();
        assert_eq!(rest, "mysql://u:p@h:3306/db?prefer_socket=false");
        assert_eq!(t.mode, SslMode::VerifyIdentity);
        assert_eq!(t.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
        let (rest, t) = MyTls::split("mysql://u@h/db").unwrap();
        assert_eq!(
            (rest.as_str(), t.mode),
            ("mysql://u@h/db", SslMode::Disabled)
        );
        assert!(MyTls::split("mysql://u@h/db?ssl-mode=PREFERRED")
            .unwrap_err()
            .contains("PREFERRED"));
        assert!(MyTls::split("mysql://u@h/db?ssl-mode=REQUIRED&ssl-cert=/c.pem").is_err());
        assert!(MyTls::split("mysql://u@h/db?ssl-ca=/c.pem")
            .unwrap_err()
            .contains("ssl-mode"));
    }

    #[test]
    fn missing_files_name_the_setting() {
        let (_, t) =
            MyTls::split("mysql://u@h/db?ssl-mode=VERIFY_CA&ssl-ca=/nonexistent/ca.pem").unwrap();
        let e = t.check_files("sources.shop.url").unwrap_err().to_string();
        assert!(
            e.contains("sources.shop.url (ssl-ca)") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }
}
