//! Mutual TLS for the transport: every connection, between nodes and from clients, can run
//! inside TLS 1.2/1.3 where both ends show a certificate signed by the cluster's CA.
//!
//! A node's certificate names [`SERVER_NAME`] (every node's does: a dialler checks that it
//! reached *a* node of this cluster; which node, the cluster name and token in the handshake
//! that follows say). A client's certificate names [`CLIENT_NAME`] instead, so it can neither
//! answer as a node nor, on a peer port ([`TlsConfig::nodes_only`]), call as one. A connection
//! whose other end has no certificate, one from another CA or an expired one fails in the TLS
//! handshake, and both ends say why in their logs.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::verify_server_name;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The DNS name every node's certificate carries and every dialler checks.
pub const SERVER_NAME: &str = "rainkv-node";

/// The DNS name a client's certificate carries (and a node's does not).
pub const CLIENT_NAME: &str = "rainkv-client";

/// A node's or a client's TLS identity: the cluster CA it trusts and its own certificate
/// chain and key, ready to dial and to accept. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    /// Accepts any certificate of the cluster's CA: a client port.
    server: Arc<ServerConfig>,
    /// Accepts nodes' certificates only: a peer port.
    nodes_server: Arc<ServerConfig>,
    /// Whether [`TlsConfig::accept`] uses `nodes_server`.
    nodes_only: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig { .. }")
    }
}

impl TlsConfig {
    /// Reads the CA certificate, the certificate chain and the private key from PEM files.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<TlsConfig, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        Self::from_pem(&read(ca)?, &read(cert)?, &read(key)?).map_err(|e| {
            format!(
                "TLS files {}, {}, {}: {e}",
                ca.display(),
                cert.display(),
                key.display()
            )
        })
    }

    /// The same from PEM text: the CA certificate(s), the certificate chain, the key.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<TlsConfig, String> {
        let certs = |pem: &[u8], what: &str| -> Result<Vec<CertificateDer<'static>>, String> {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err(format!("{what}: no certificate in it"));
            }
            Ok(certs)
        };
        let mut roots = RootCertStore::empty();
        for ca in certs(ca, "the CA file")? {
            roots
                .add(ca)
                .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
        }
        let roots = Arc::new(roots);
        let chain = certs(cert, "the certificate file")?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| format!("the key file: not a PEM private key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("cannot verify clients against the CA: {e}"))?;
        let server_with = |verifier: Arc<dyn ClientCertVerifier>| {
            ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("the certificate and key do not make a server identity: {e}"))
        };
        let server = server_with(verifier.clone())?;
        let nodes_server = server_with(Arc::new(NodesOnly(verifier)))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the certificate and key do not make a client identity: {e}"))?;
        Ok(TlsConfig {
            client: Arc::new(client),
            server: Arc::new(server),
            nodes_server: Arc::new(nodes_server),
            nodes_only: false,
        })
    }

    /// The same identity, accepting only callers whose certificate is a node's (for a peer
    /// port: a client's certificate must not carry Raft traffic).
    pub fn nodes_only(&self) -> TlsConfig {
        TlsConfig {
            nodes_only: true,
            ..self.clone()
        }
    }

    /// The dialling side of the TLS handshake on `stream`.
    pub(crate) async fn connect(
        &self,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
        TlsConnector::from(self.client.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    }

    /// The accepting side of the TLS handshake on `stream`.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
        let server = if self.nodes_only {
            &self.nodes_server
        } else {
            &self.server
        };
        TlsAcceptor::from(server.clone())
            .accept(stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    }
}

/// Verifies a caller's certificate against the CA, then refuses it unless it names
/// [`SERVER_NAME`], as nodes' certificates do and clients' do not.
#[derive(Debug)]
struct NodesOnly(Arc<dyn ClientCertVerifier>);

/// Why a peer port refused a certificate the CA signed.
#[derive(Debug)]
struct NotANode;

impl fmt::Display for NotANode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the certificate is not a node's (it does not name {SERVER_NAME}); a peer port \
             takes nodes only"
        )
    }
}

impl std::error::Error for NotANode {}

impl ClientCertVerifier for NodesOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        let name =
            ServerName::try_from(SERVER_NAME).map_err(|e| rustls::Error::General(e.to_string()))?;
        verify_server_name(&ParsedCertificate::try_from(end_entity)?, &name).map_err(|_| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                NotANode,
            ))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
