//! Cluster certificates: a CA that signs one certificate per node. Every endpoint presents its
//! node certificate and accepts only peers whose certificate chains to the cluster CA.

use crate::error::TransportError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name every node certificate carries and every client checks: the cluster CA, not DNS,
/// is the trust anchor, so nodes need not be reachable under the names in their certificates.
pub const DEFAULT_SERVER_NAME: &str = "ps-node";

/// Paths to a node's certificate material (PEM).
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPaths {
    /// The files `generate_cluster_certs` writes for node `name` in `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> CertPaths {
        CertPaths {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// A loaded identity: the CA roots, this node's chain and key.
#[derive(Debug)]
pub struct ClusterIdentity {
    pub roots: Arc<rustls::RootCertStore>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClusterIdentity {
    fn clone(&self) -> Self {
        ClusterIdentity {
            roots: self.roots.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::File {
        path: path.display().to_string(),
        source,
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bytes = read(path)?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut bytes.as_slice()).collect();
    let certs = certs.map_err(|e| TransportError::BadCertificate {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TransportError::BadCertificate {
            path: path.display().to_string(),
            reason: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

impl ClusterIdentity {
    pub fn load(paths: &CertPaths) -> Result<ClusterIdentity, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(&paths.ca)? {
            roots.add(c).map_err(|e| TransportError::BadCertificate {
                path: paths.ca.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let chain = load_certs(&paths.cert)?;
        let key_bytes = read(&paths.key)?;
        let key = rustls_pemfile::private_key(&mut key_bytes.as_slice())
            .map_err(|e| TransportError::BadCertificate {
                path: paths.key.display().to_string(),
                reason: e.to_string(),
            })?
            .ok_or_else(|| TransportError::BadCertificate {
                path: paths.key.display().to_string(),
                reason: "no PEM private key found".into(),
            })?;
        Ok(ClusterIdentity {
            roots: Arc::new(roots),
            chain,
            key,
        })
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Server side: TLS 1.3 only, client certificates required and checked against the CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TransportError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            Self::provider(),
        )
        .build()
        .map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        cfg.alpn_protocols = vec![ps_proto::ALPN.to_vec()];
        Ok(cfg)
    }

    /// Client side: TLS 1.3 only, the server must chain to the CA, and we present our certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TransportError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        cfg.alpn_protocols = vec![ps_proto::ALPN.to_vec()];
        Ok(cfg)
    }
}

fn gen_err(e: rcgen::Error) -> TransportError {
    TransportError::CertGen(e.to_string())
}

fn write_file(path: &Path, contents: &str) -> Result<(), TransportError> {
    std::fs::write(path, contents).map_err(|source| TransportError::File {
        path: path.display().to_string(),
        source,
    })
}

/// Generates a cluster CA (`ca.pem`, `ca.key`) and one certificate per node (`NAME.pem`,
/// `NAME.key`) into `dir`. Node certificates carry the name [`DEFAULT_SERVER_NAME`], `localhost`,
/// 127.0.0.1 and any `extra_names` (host names or IP addresses), and are valid for both server and
/// client authentication.
pub fn generate_cluster_certs(
    dir: &Path,
    nodes: &[String],
    extra_names: &[String],
) -> Result<(), TransportError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    std::fs::create_dir_all(dir).map_err(|source| TransportError::File {
        path: dir.display().to_string(),
        source,
    })?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "parameter-server cluster CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
    write_file(&dir.join("ca.pem"), &ca_cert.pem())?;
    write_file(&dir.join("ca.key"), &ca_key.serialize_pem())?;

    for node in nodes {
        let mut names = vec![DEFAULT_SERVER_NAME.to_string(), "localhost".to_string()];
        names.extend(
            extra_names
                .iter()
                .filter(|n| n.parse::<std::net::IpAddr>().is_err())
                .cloned(),
        );
        let mut params = CertificateParams::new(names).map_err(gen_err)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::V4(
                std::net::Ipv4Addr::LOCALHOST,
            )));
        for ip in extra_names
            .iter()
            .filter_map(|n| n.parse::<std::net::IpAddr>().ok())
        {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(gen_err)?;
        write_file(&dir.join(format!("{node}.pem")), &cert.pem())?;
        write_file(&dir.join(format!("{node}.key")), &key.serialize_pem())?;
    }
    Ok(())
}
