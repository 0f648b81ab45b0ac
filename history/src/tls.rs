//! TLS to ScyllaDB (`--scylla-tls-ca`, `--scylla-tls-server-name`, `--scylla-tls-cert`,
//! `--scylla-tls-key`): the files are read and checked once, at start-up, into a rustls
//! client configuration that every connection of the driver uses.
//!
//! The driver names each node by its IP address in the handshake, so by default a node's
//! certificate must carry that IP in its subject alternative names. Clusters whose
//! certificates name a host instead (one shared name, as Scylla Operator's are commonly
//! issued) set `--scylla-tls-server-name`: every certificate is then verified against the CA
//! and that name, whatever address the node has. Verification is never turned off.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where the TLS material is, as the flags give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates of the authorities that sign the nodes' certificates.
    pub ca: PathBuf,
    /// The name every node's certificate must carry, instead of the node's IP address.
    pub server_name: Option<String>,
    /// A client certificate chain and its private key (PEM), for nodes that require client
    /// authentication (`require_client_auth: true`).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A checked TLS client configuration, ready for the driver.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    config: Arc<ClientConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads and checks the files: at least one CA certificate, a valid server name, and a
    /// client key that parses.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let certificates = read_certificates(&files.ca)?;
        let (added, _) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            return Err(format!(
                "--scylla-tls-ca {}: no usable certificate",
                files.ca.display()
            ));
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(|e| format!("--scylla-tls-ca {}: {e}", files.ca.display()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &files.server_name {
            None => verifier,
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| format!("--scylla-tls-server-name {name:?}: {e}"))?;
                Arc::new(NamedServer {
                    inner: verifier,
                    name,
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS to ScyllaDB: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &files.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certificates(cert)?;
                if chain.is_empty() {
                    return Err(format!(
                        "--scylla-tls-cert {}: no certificate",
                        cert.display()
                    ));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--scylla-tls-key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--scylla-tls-cert/--scylla-tls-key: {e}"))?
            }
        };
        Ok(Tls {
            files,
            config: Arc::new(config),
        })
    }

    /// The configuration the driver's connections use.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Verifies a node's certificate against the CA and one configured name, instead of the IP
/// address the driver connected to. Everything else (chain, validity, signatures) is the
/// `WebPkiServerVerifier`'s.
#[derive(Debug)]
struct NamedServer {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _connected_to: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
