//! TLS for `wss://` on native targets: rustls with the ring provider.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// How `wss://` connections verify the server and identify the client.
///
/// By default the server's certificate must chain to a root in the
/// operating system's store.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Extra trusted CA certificates, PEM (each entry may hold several).
    pub ca_pem: Vec<Vec<u8>>,
    /// Do not trust the operating system's roots, only [`Self::ca_pem`].
    pub no_system_roots: bool,
    /// A client certificate chain and its private key, PEM, for servers
    /// that require client certificates (mTLS).
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Accept any server certificate. For development only: anyone on the
    /// path can read and change the traffic.
    pub insecure: bool,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.len())
            .field("no_system_roots", &self.no_system_roots)
            .field("client_identity", &self.client_identity.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TlsOptions {
    /// Also trust the CA certificates in this PEM.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem.push(pem.into());
        self
    }

    /// Trust only the CAs given with [`Self::ca_pem`], not the system's.
    pub fn no_system_roots(mut self) -> Self {
        self.no_system_roots = true;
        self
    }

    /// Present this certificate chain and key (PEM) to servers that ask.
    pub fn client_identity_pem(
        mut self,
        cert_chain: impl Into<Vec<u8>>,
        private_key: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_identity = Some((cert_chain.into(), private_key.into()));
        self
    }

    /// Accept any server certificate (development only).
    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// The rustls configuration these options describe (for tools that
    /// open TLS connections of their own, such as `steadfast proxy`).
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] for unusable certificate or key PEM, or no trusted roots.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
        } else {
            let mut roots = if self.no_system_roots {
                RootCertStore::empty()
            } else {
                system_roots().as_ref().clone()
            };
            for pem in &self.ca_pem {
                for cert in certificates(pem, "CA")? {
                    roots
                        .add(cert)
                        .map_err(|e| Error::Tls(format!("CA certificate refused: {e}")))?;
                }
            }
            if roots.is_empty() {
                return Err(Error::Tls(
                    "no trusted roots: the system store is empty or unused and no CA was given"
                        .into(),
                ));
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.client_identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let chain = certificates(chain, "client")?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|_| Error::Tls("no valid private key in the client key PEM".into()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Tls(format!("client certificate refused: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The operating system's roots, loaded once per process. Unreadable
/// entries are skipped; an empty store is reported when connecting.
fn system_roots() -> &'static Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "skipping part of the system certificate store");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "loaded system roots");
        Arc::new(roots)
    })
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("malformed {what} certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("no {what} certificate in the PEM")));
    }
    Ok(certs)
}

/// `insecure`: any certificate is accepted; signatures are still checked so
/// the handshake itself is sound.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
