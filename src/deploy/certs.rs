//! `rainkv-ctl certs`: a cluster CA and the certificates mutual TLS needs, written as the
//! cluster file's `[tls] dir` expects them (see [`cert_files`]): one per node, naming
//! [`SERVER_NAME`] and usable to dial and to accept, and one for clients.
//!
//! The CA's key is written beside them so that `certs node` can issue a certificate for a
//! node that joins later; keep it off the nodes' machines.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::cluster_file::cert_files;
use crate::actors::tcp::SERVER_NAME;

/// The CA's subject; a CA rebuilt from its key and these parameters issues certificates
/// that chain to the one written first.
fn ca_params() -> Result<CertificateParams, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "rainkv cluster CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Writes `name` in `dir` unless it exists; returns its path.
fn write_new(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    if path.exists() {
        return Err(format!("{} exists; not overwritten", path.display()));
    }
    fs::write(&path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// A certificate for `common_name` signed by `issuer`, naming [`SERVER_NAME`], good to dial
/// and to accept with; its PEM and its key's.
fn issue(issuer: &Issuer<'_, KeyPair>, common_name: &str) -> Result<(String, String), String> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| format!("cannot sign {common_name}'s certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Creates `dir` (if needed) with a new CA, certificates for nodes `0..nodes` and one for
/// clients; refuses to overwrite any file. Returns the files written.
pub fn init(dir: &Path, nodes: usize) -> Result<Vec<PathBuf>, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if dir.join(cert_files::CA).exists() {
        return Err(format!(
            "{} already holds a CA; use `certs node` to add a node's certificate",
            dir.display()
        ));
    }
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .map_err(|e| format!("cannot make the CA: {e}"))?;
    let mut written = vec![
        write_new(dir, cert_files::CA, &ca_cert.pem())?,
        write_new(dir, cert_files::CA_KEY, &ca_key.serialize_pem())?,
    ];
    let issuer = Issuer::new(ca_params()?, ca_key);
    for id in 0..nodes {
        let (cert, key) = issue(&issuer, &format!("rainkv node {id}"))?;
        written.push(write_new(dir, &cert_files::node_cert(id), &cert)?);
        written.push(write_new(dir, &cert_files::node_key(id), &key)?);
    }
    let (cert, key) = issue(&issuer, "rainkv client")?;
    written.push(write_new(dir, cert_files::CLIENT, &cert)?);
    written.push(write_new(dir, cert_files::CLIENT_KEY, &key)?);
    Ok(written)
}

/// Issues node `id`'s certificate with the CA in `dir` (for a node that joins later).
pub fn node(dir: &Path, id: usize) -> Result<Vec<PathBuf>, String> {
    let key_path = dir.join(cert_files::CA_KEY);
    let pem = fs::read_to_string(&key_path)
        .map_err(|e| format!("cannot read the CA key {}: {e}", key_path.display()))?;
    let ca_key = KeyPair::from_pem(&pem)
        .map_err(|e| format!("{} is not a PEM key: {e}", key_path.display()))?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let (cert, key) = issue(&issuer, &format!("rainkv node {id}"))?;
    Ok(vec![
        write_new(dir, &cert_files::node_cert(id), &cert)?,
        write_new(dir, &cert_files::node_key(id), &key)?,
    ])
}
