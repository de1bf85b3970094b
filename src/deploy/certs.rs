//! `rainkv-ctl certs`: a cluster CA and the certificates mutual TLS needs, written as the
//! cluster file's `[tls] dir` expects them (see [`cert_files`]): one per node, naming
//! [`SERVER_NAME`] and usable to dial and to accept, and one for clients, naming
//! [`CLIENT_NAME`] and usable to dial only (a peer port refuses it).
//!
//! The CA's key is written beside them so that `certs node` can issue a certificate for a
//! node that joins later; keep it off the nodes' machines. Certificates are valid for
//! [`Validity`] (by default [`DEFAULT_DAYS`] from an hour ago, to allow for clocks a little
//! behind); the CA for at least ten years, so renewing a node's certificate means running
//! `certs node` again, not a new CA.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::cluster_file::cert_files;
use crate::actors::tcp::{CLIENT_NAME, SERVER_NAME};

/// How long certificates last when no `--days` is given.
pub const DEFAULT_DAYS: u32 = 365;

/// The CA lasts at least this long.
const CA_MIN_DAYS: u32 = 3650;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// When a certificate starts and stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before this.
    pub not_before: SystemTime,
    /// Not valid after this.
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (a peer's clock may be a little behind) until `days` from now.
    pub fn days(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + DAY * days,
        }
    }

    fn apply(self, params: &mut CertificateParams) {
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
    }
}

impl Default for Validity {
    fn default() -> Self {
        Validity::days(DEFAULT_DAYS)
    }
}

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

/// Whose certificate [`issue`] makes.
#[derive(Debug, Clone, Copy)]
enum Holder {
    /// Node `id`: names [`SERVER_NAME`], dials and accepts.
    Node(usize),
    /// A client: names [`CLIENT_NAME`], dials only.
    Client,
}

/// A certificate for `holder` signed by `issuer`, valid for `validity`; its PEM and its
/// key's.
fn issue(
    issuer: &Issuer<'_, KeyPair>,
    holder: Holder,
    validity: Validity,
) -> Result<(String, String), String> {
    let (name, common_name, usages) = match holder {
        Holder::Node(id) => (
            SERVER_NAME,
            format!("rainkv node {id}"),
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
        Holder::Client => (
            CLIENT_NAME,
            "rainkv client".to_string(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        ),
    };
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, &common_name);
    params.extended_key_usages = usages;
    validity.apply(&mut params);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| format!("cannot sign {common_name}'s certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Creates `dir` (if needed) with a new CA, certificates for nodes `0..nodes` and one for
/// clients, valid for `validity`; refuses to overwrite any file. Returns the files written.
pub fn init(dir: &Path, nodes: usize, validity: Validity) -> Result<Vec<PathBuf>, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if dir.join(cert_files::CA).exists() {
        return Err(format!(
            "{} already holds a CA; use `certs node` to add a node's certificate",
            dir.display()
        ));
    }
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca = ca_params()?;
    Validity {
        not_after: validity
            .not_after
            .max(validity.not_before + DAY * CA_MIN_DAYS),
        ..validity
    }
    .apply(&mut ca);
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(|e| format!("cannot make the CA: {e}"))?;
    let mut written = vec![
        write_new(dir, cert_files::CA, &ca_cert.pem())?,
        write_new(dir, cert_files::CA_KEY, &ca_key.serialize_pem())?,
    ];
    let issuer = Issuer::new(ca_params()?, ca_key);
    for id in 0..nodes {
        let (cert, key) = issue(&issuer, Holder::Node(id), validity)?;
        written.push(write_new(dir, &cert_files::node_cert(id), &cert)?);
        written.push(write_new(dir, &cert_files::node_key(id), &key)?);
    }
    let (cert, key) = issue(&issuer, Holder::Client, validity)?;
    written.push(write_new(dir, cert_files::CLIENT, &cert)?);
    written.push(write_new(dir, cert_files::CLIENT_KEY, &key)?);
    Ok(written)
}

/// Issues node `id`'s certificate, valid for `validity`, with the CA in `dir` (for a node
/// that joins later, or to renew one: remove the old files first).
pub fn node(dir: &Path, id: usize, validity: Validity) -> Result<Vec<PathBuf>, String> {
    let key_path = dir.join(cert_files::CA_KEY);
    let pem = fs::read_to_string(&key_path)
        .map_err(|e| format!("cannot read the CA key {}: {e}", key_path.display()))?;
    let ca_key = KeyPair::from_pem(&pem)
        .map_err(|e| format!("{} is not a PEM key: {e}", key_path.display()))?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let (cert, key) = issue(&issuer, Holder::Node(id), validity)?;
    Ok(vec![
        write_new(dir, &cert_files::node_cert(id), &cert)?,
        write_new(dir, &cert_files::node_key(id), &key)?,
    ])
}
