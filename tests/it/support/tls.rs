//! A throwaway PKI per test (rcgen, files in a temp dir): a CA, a server
//! certificate for `localhost` and `127.0.0.1` signed by it, a client
//! certificate signed by it, and an unrelated CA with its own server
//! certificate (for "wrong CA" tests).

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    dir: tempfile::TempDir,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// (certificate PEM, key PEM) signed by `ca`.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![usage];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("sy-pki-")
            .tempdir()
            .unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let ca1 = ca("switchyard test CA");
        write("ca.crt", &ca1.pem());
        let (c, k) = leaf(
            &ca1,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("server.crt", &c);
        write("server.key", &k);
        let (c, k) = leaf(&ca1, "switchyard", &[], ExtendedKeyUsagePurpose::ClientAuth);
        write("client.crt", &c);
        write("client.key", &k);
        let ca2 = ca("some other CA");
        write("other-ca.crt", &ca2.pem());
        let (c, k) = leaf(
            &ca2,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("other-server.crt", &c);
        write("other-server.key", &k);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// The CA that signed `server.crt` and `client.crt`.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }
    /// A CA that signed nothing the servers present.
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.crt")
    }

    /// A reqwest client trusting only this PKI's CA.
    pub fn https_client(&self) -> reqwest::Client {
        self.https_client_trusting(&self.ca())
    }

    pub fn https_client_trusting(&self, ca: &std::path::Path) -> reqwest::Client {
        let pem = std::fs::read(ca).unwrap();
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap()
    }
}
