//! rustls configurations for the peer port from PEM files (mutual TLS).

use std::path::Path;
use std::sync::Arc;

use crate::error::{Context, Result, bail};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let v: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if v.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(v)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading the private key in {}", path.display()))
}

fn roots(ca: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .with_context(|| format!("adding CA from {}", ca.display()))?;
    }
    Ok(roots)
}

/// PEM files for one side of the peer link.
#[derive(Debug, Clone, Default)]
pub struct PeerTlsFiles {
    /// Our certificate (server and client).
    pub cert: Option<std::path::PathBuf>,
    /// Its key.
    pub key: Option<std::path::PathBuf>,
    /// The cluster's CA (verifies etcd's certificates, and clients when set).
    pub ca: Option<std::path::PathBuf>,
}

impl PeerTlsFiles {
    /// Whether any TLS file was given.
    pub fn any(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some()
    }

    /// Server config: our cert; client certs required and verified when a CA is set
    /// (as etcd's `--peer-client-cert-auth` / `--peer-trusted-ca-file`). TLS 1.2 and 1.3.
    pub fn server(&self) -> Result<Arc<rustls::ServerConfig>> {
        let (Some(cert), Some(key_path)) = (&self.cert, &self.key) else {
            bail!("--peer-cert and --peer-key are both needed to serve TLS");
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                        .build()
                        .context("client certificate verifier")?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder
            .with_single_cert(certs(cert)?, key(key_path)?)
            .context("peer certificate and key")?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Client config for dialling etcd peers: verifies them with the CA and
    /// presents our certificate when given.
    pub fn client(&self) -> Result<Arc<rustls::ClientConfig>> {
        let Some(ca) = &self.ca else {
            bail!("--peer-ca is needed to verify etcd's peer certificates");
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots(ca)?);
        let mut cfg = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(certs(c)?, key(k)?)
                .context("peer client certificate")?,
            (None, None) => builder.with_no_client_auth(),
            _ => bail!("--peer-cert and --peer-key go together"),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
