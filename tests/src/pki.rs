//! Test certificates: a CA and certificates signed by it, in a temp dir.

/// A CA plus one certificate (SAN 127.0.0.1, server and client use) per name.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A new CA in a temp dir, and `NAME.pem` / `NAME-key.pem` per name.
    pub fn new(names: &[&str]) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "etcd-standby test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for name in names {
            let mut p =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .unwrap();
            p.distinguished_name.push(DnType::CommonName, *name);
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}-key.pem")),
                key.serialize_pem(),
            )
            .unwrap();
        }
        Pki { dir }
    }
    /// The path of file `f` (`ca.pem`, `NAME.pem`, `NAME-key.pem`).
    pub fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }
}
