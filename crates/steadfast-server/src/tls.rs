//! TLS (`wss://`): a certificate chain and key in PEM, and optionally the
//! CA that client certificates must chain to (mTLS).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// A client may present a certificate; if it does, it must chain to
    /// one of these CA certificates (PEM). The handler sees it in
    /// [`Peer::client_certificate`](crate::Peer::client_certificate).
    Optional(Vec<u8>),
    /// Every client must present a certificate chaining to one of these CA
    /// certificates (PEM); others fail the TLS handshake.
    Required(Vec<u8>),
}

/// TLS settings for [`ServerConfig::tls`](crate::ServerConfig::tls).
///
/// ```no_run
/// # fn demo() -> Result<(), steadfast_server::TlsError> {
/// use steadfast_server::{ClientAuth, TlsConfig};
/// let tls = TlsConfig::from_pem_files("cert.pem", "key.pem", None)?;
/// let mtls = TlsConfig::from_pem(
///     &std::fs::read("cert.pem").unwrap(),
///     &std::fs::read("key.pem").unwrap(),
///     ClientAuth::Required(std::fs::read("clients-ca.pem").unwrap()),
/// )?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: TlsAcceptor,
    client_auth: &'static str,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The PEM text holds no certificate, or a malformed one.
    #[error("no valid certificate in the {0} PEM")]
    Certificate(&'static str),
    /// The PEM text holds no private key, or a malformed one.
    #[error("no valid private key in the key PEM (PKCS#8, PKCS#1 or SEC1)")]
    PrivateKey,
    /// rustls refused the certificate, key or CA.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

impl TlsError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            TlsError::Read { .. } => "ERR_TLS_READ",
            TlsError::Certificate(_) => "ERR_TLS_CERTIFICATE",
            TlsError::PrivateKey => "ERR_TLS_PRIVATE_KEY",
            TlsError::Rustls(_) => "ERR_TLS_CONFIG",
        }
    }
}

impl TlsConfig {
    /// The server's certificate chain (leaf first) and private key, in PEM.
    pub fn from_pem(
        cert_chain: &[u8],
        private_key: &[u8],
        client_auth: ClientAuth,
    ) -> Result<TlsConfig, TlsError> {
        let chain = certificates(cert_chain, "server certificate")?;
        let key = PrivateKeyDer::from_pem_slice(private_key).map_err(|_| TlsError::PrivateKey)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let (builder, label) = match &client_auth {
            ClientAuth::None => (builder.with_no_client_auth(), "none"),
            ClientAuth::Optional(ca) | ClientAuth::Required(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca, "client CA")? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Rustls(e.to_string()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
                let (verifier, label) = if matches!(client_auth, ClientAuth::Optional(_)) {
                    (verifier.allow_unauthenticated(), "optional")
                } else {
                    (verifier, "required")
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
                (builder.with_client_cert_verifier(verifier), label)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig::from_rustls(Arc::new(config)).with_label(label))
    }

    /// [`TlsConfig::from_pem`] with the PEM read from files; the client CA
    /// file, if any, makes client certificates required.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
        client_ca: Option<&Path>,
    ) -> Result<TlsConfig, TlsError> {
        let client_auth = match client_ca {
            Some(path) => ClientAuth::Required(read(path)?),
            None => ClientAuth::None,
        };
        TlsConfig::from_pem(
            &read(cert_chain.as_ref())?,
            &read(private_key.as_ref())?,
            client_auth,
        )
    }

    /// A rustls configuration built by the embedding application.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig {
            acceptor: TlsAcceptor::from(config),
            client_auth: "custom",
        }
    }

    fn with_label(mut self, label: &'static str) -> TlsConfig {
        self.client_auth = label;
        self
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certificates(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Certificate(what))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate(what));
    }
    Ok(certs)
}
