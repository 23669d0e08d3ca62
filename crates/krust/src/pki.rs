//! The cluster's certificates, kept under `<data-dir>/tls/`.
//!
//! [`ensure`] makes sure three certificates exist and are usable, creating only what
//! is missing or unusable:
//! - `ca.crt` / `ca.key`: the cluster CA, self-signed, valid 10 years. It is never
//!   replaced silently: if it is there but unusable, [`ensure`] fails and says how to
//!   start over, because a new CA invalidates every kubeconfig handed out so far.
//! - `apiserver.crt` / `apiserver.key`: the API server's serving certificate, valid for
//!   the names in [`ServingNames`]. It is issued again when it expires within
//!   [`RENEW_BEFORE_DAYS`], no longer chains to the CA, or no longer covers every name
//!   (for example after the host got a new address).
//! - `admin.crt` / `admin.key`: the admin's client certificate (CN `system:admin`,
//!   O `system:masters`), renewed on the same terms.
//!
//! Beside them [`ensure_service_account_key`] keeps `service-account.key`, the key
//! that signs service account tokens. Servers sharing a datastore share the CA and
//! that key through it (`crate::cluster_secrets`).
//!
//! Keys are ECDSA P-256, written with mode 0600. Files are written to a temporary name
//! and renamed, so a crash never leaves half a file.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// How long the CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long serving and client certificates are valid.
pub const LEAF_VALIDITY_DAYS: i64 = 365;
/// Serving and client certificates are issued again when they expire within this many days.
pub const RENEW_BEFORE_DAYS: i64 = 90;
/// The first address of the Service CIDR (10.43.0.0/16): the `kubernetes` Service.
pub const FIRST_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);
/// Common name of the admin's client certificate.
pub const ADMIN_USER: &str = "system:admin";
/// Organization (group) of the admin's client certificate.
pub const ADMIN_GROUP: &str = "system:masters";
/// The file in the `tls/` dir holding the key that signs service account tokens.
pub const SERVICE_ACCOUNT_KEY_FILE: &str = "service-account.key";
/// Certificates are backdated this much, to tolerate clocks slightly behind ours.
const BACKDATE: Duration = Duration::hours(1);

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster's certificates, ready to use.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca: CertAndKey,
    pub serving: CertAndKey,
    pub admin: CertAndKey,
}

/// The names the serving certificate must be valid for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServingNames {
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

impl ServingNames {
    /// The fixed names (`localhost`, `kubernetes[.default[.svc[.cluster.local]]]`,
    /// loopback, the first Service IP), the bind address unless it is a wildcard, and
    /// the given host addresses.
    pub fn new(bind_address: IpAddr, host_addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        let dns = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let mut ips: BTreeSet<IpAddr> = host_addresses.into_iter().collect();
        ips.insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
        ips.insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
        ips.insert(IpAddr::V4(FIRST_SERVICE_IP));
        if !bind_address.is_unspecified() {
            ips.insert(bind_address);
        }
        ips.retain(|ip| !ip.is_unspecified());
        ServingNames { dns, ips }
    }
}

/// File locations under the TLS directory.
struct Paths {
    dir: PathBuf,
    ca_cert: PathBuf,
    ca_key: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Self {
        Paths {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
        }
    }
}

/// The CA, loaded: its PEMs and an issuer to sign with.
struct Ca {
    pem: CertAndKey,
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// What a leaf certificate is for.
enum Leaf<'a> {
    Serving(&'a ServingNames),
    Admin,
}

impl Leaf<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Leaf::Serving(_) => "serving certificate",
            Leaf::Admin => "admin client certificate",
        }
    }
}

/// Creates or reuses the cluster's certificates under `tls_dir` (created with mode 0700).
pub fn ensure(tls_dir: &Path, names: &ServingNames) -> Result<Pki> {
    create_private_dir(tls_dir)?;
    let paths = Paths::new(tls_dir);
    let now = OffsetDateTime::now_utc();
    let ca = ensure_ca(&paths, now)?;
    let serving = ensure_leaf(
        &ca,
        &paths.serving_cert,
        &paths.serving_key,
        &Leaf::Serving(names),
        now,
    )?;
    let admin = ensure_leaf(&ca, &paths.admin_cert, &paths.admin_key, &Leaf::Admin, now)?;
    Ok(Pki {
        ca: ca.pem,
        serving,
        admin,
    })
}

/// The PEM of the key that signs service account tokens: `path` when it exists, else
/// a new ECDSA P-256 key written there. Servers sharing one cluster need the same key.
pub fn ensure_service_account_key(path: &Path) -> Result<String> {
    if path.exists() {
        return read(path);
    }
    let key = KeyPair::generate().context("cannot generate the service account key")?;
    tracing::info!(path = %path.display(), "creating a new service account signing key");
    let pem = key.serialize_pem();
    write_private(path, &pem)?;
    Ok(pem)
}

/// Creates `dir` (and parents) if needed, and makes it private to its owner.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the permissions of {}", dir.display()))
}

fn ensure_ca(paths: &Paths, now: OffsetDateTime) -> Result<Ca> {
    // The certificate is written last, so "ca.crt exists" means "a CA was made".
    if !paths.ca_cert.exists() {
        tracing::info!(dir = %paths.dir.display(), "creating a new cluster CA");
        let ca = new_ca(now)?;
        write_private(&paths.ca_key, &ca.pem.key_pem)?;
        write_file(&paths.ca_cert, &ca.pem.cert_pem, 0o644)?;
        return Ok(ca);
    }
    let start_over = format!(
        "to start over with a new CA, delete {} (every kubeconfig issued so far will stop working)",
        paths.dir.display()
    );
    let cert_pem = read(&paths.ca_cert)?;
    let key_pem = fs::read_to_string(&paths.ca_key).with_context(|| {
        format!(
            "found {} but cannot read its key {}; restore the key, or {start_over}",
            paths.ca_cert.display(),
            paths.ca_key.display()
        )
    })?;
    let loaded = load_ca(cert_pem, key_pem, now).with_context(|| {
        format!(
            "the cluster CA {} is unusable; {start_over}",
            paths.ca_cert.display()
        )
    })?;
    Ok(loaded)
}

fn load_ca(cert_pem: String, key_pem: String, now: OffsetDateTime) -> Result<Ca> {
    let der = pem_to_der(&cert_pem)?;
    let cert = parse_der(&der)?;
    if !cert.is_ca() {
        bail!("it is not a CA certificate");
    }
    cert.verify_signature(None)
        .map_err(|err| anyhow::anyhow!("it is not validly self-signed: {err}"))?;
    let key = KeyPair::from_pem(&key_pem).context("cannot parse its private key")?;
    if key.subject_public_key_info() != cert.public_key().raw {
        bail!("its private key does not belong to it");
    }
    let not_after = cert.validity().not_after.timestamp();
    if not_after <= now.unix_timestamp() {
        bail!("it expired");
    }
    if not_after <= (now + Duration::days(RENEW_BEFORE_DAYS)).unix_timestamp() {
        tracing::warn!("the cluster CA expires within {RENEW_BEFORE_DAYS} days");
    }
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).context("cannot use it to sign")?;
    Ok(Ca {
        pem: CertAndKey { cert_pem, key_pem },
        der: der.clone(),
        issuer,
    })
}

fn new_ca(now: OffsetDateTime) -> Result<Ca> {
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // A timestamp in the name keeps CAs made on different days apart in trust stores.
    params.distinguished_name.push(
        DnType::CommonName,
        format!("krust-ca@{}", now.unix_timestamp()),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let cert = params
        .self_signed(&key)
        .context("cannot sign the CA certificate")?;
    let pem = CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    Ok(Ca {
        pem,
        der: cert.der().to_vec(),
        issuer: Issuer::new(params, key),
    })
}

fn ensure_leaf(
    ca: &Ca,
    cert_path: &Path,
    key_path: &Path,
    leaf: &Leaf<'_>,
    now: OffsetDateTime,
) -> Result<CertAndKey> {
    let reason = match (fs::read_to_string(cert_path), fs::read_to_string(key_path)) {
        (Ok(cert_pem), Ok(key_pem)) => match check_leaf(ca, &cert_pem, &key_pem, leaf, now) {
            Ok(()) => return Ok(CertAndKey { cert_pem, key_pem }),
            Err(reason) => reason,
        },
        _ => "there is none yet".to_string(),
    };
    tracing::info!(path = %cert_path.display(), "issuing a new {}: {reason}", leaf.describe());
    let issued = issue_leaf(ca, leaf, now)?;
    write_private(key_path, &issued.key_pem)?;
    write_file(cert_path, &issued.cert_pem, 0o644)?;
    Ok(issued)
}

/// Says why an existing leaf certificate can not be reused, if it can not.
fn check_leaf(
    ca: &Ca,
    cert_pem: &str,
    key_pem: &str,
    leaf: &Leaf<'_>,
    now: OffsetDateTime,
) -> Result<(), String> {
    let der = pem_to_der(cert_pem).map_err(|err| format!("{err:#}"))?;
    let cert = parse_der(&der).map_err(|err| format!("{err:#}"))?;
    let ca_cert = parse_der(&ca.der).map_err(|err| format!("{err:#}"))?;
    if cert.issuer().as_raw() != ca_cert.subject().as_raw()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Err("the existing one was not signed by the current CA".into());
    }
    let key = KeyPair::from_pem(key_pem).map_err(|err| format!("its key is unreadable: {err}"))?;
    if key.subject_public_key_info() != cert.public_key().raw {
        return Err("its key does not belong to it".into());
    }
    let validity = cert.validity();
    if validity.not_before.timestamp() > now.unix_timestamp() {
        return Err("the existing one is not valid yet".into());
    }
    if validity.not_after.timestamp() <= (now + Duration::days(RENEW_BEFORE_DAYS)).unix_timestamp()
    {
        return Err(format!(
            "the existing one expires within {RENEW_BEFORE_DAYS} days"
        ));
    }
    match leaf {
        Leaf::Serving(names) => {
            let (dns, ips) = subject_alt_names(&cert)?;
            let missing: Vec<String> = names
                .dns
                .iter()
                .filter(|name| !dns.contains(*name))
                .cloned()
                .chain(
                    names
                        .ips
                        .iter()
                        .filter(|ip| !ips.contains(*ip))
                        .map(|ip| ip.to_string()),
                )
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "the existing one does not cover {}",
                    missing.join(", ")
                ));
            }
        }
        Leaf::Admin => {
            let common_name = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok());
            let is_master = cert
                .subject()
                .iter_organization()
                .any(|o| o.as_str() == Ok(ADMIN_GROUP));
            if common_name != Some(ADMIN_USER) || !is_master {
                return Err(format!(
                    "the existing one is not for {ADMIN_USER} in {ADMIN_GROUP}"
                ));
            }
        }
    }
    Ok(())
}

fn issue_leaf(ca: &Ca, leaf: &Leaf<'_>, now: OffsetDateTime) -> Result<CertAndKey> {
    let key = KeyPair::generate().context("cannot generate a key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    match leaf {
        Leaf::Serving(names) => {
            params
                .distinguished_name
                .push(DnType::CommonName, "kube-apiserver");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            for name in &names.dns {
                let name = name
                    .clone()
                    .try_into()
                    .with_context(|| format!("{name:?} can not be a DNS name in a certificate"))?;
                params.subject_alt_names.push(SanType::DnsName(name));
            }
            for ip in &names.ips {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
        }
        Leaf::Admin => {
            params
                .distinguished_name
                .push(DnType::CommonName, ADMIN_USER);
            params
                .distinguished_name
                .push(DnType::OrganizationName, ADMIN_GROUP);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    let cert = params
        .signed_by(&key, &ca.issuer)
        .with_context(|| format!("cannot sign the {}", leaf.describe()))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The DNS names and IP addresses a certificate is valid for.
fn subject_alt_names(
    cert: &X509Certificate<'_>,
) -> Result<(BTreeSet<String>, BTreeSet<IpAddr>), String> {
    let mut dns = BTreeSet::new();
    let mut ips = BTreeSet::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|err| format!("its subject alternative names are unreadable: {err}"))?;
    for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(name) => {
                dns.insert(name.to_string());
            }
            GeneralName::IPAddress(bytes) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                    ips.insert(IpAddr::from(v4));
                } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    ips.insert(IpAddr::from(v6));
                }
            }
            _ => {}
        }
    }
    Ok((dns, ips))
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|err| anyhow::anyhow!("not a PEM certificate: {err}"))?;
    Ok(parsed.contents)
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| anyhow::anyhow!("not a valid X.509 certificate: {err}"))?;
    Ok(cert)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes a file only its owner can read (keys, kubeconfigs).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    write_file(path, contents, 0o600)
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename) with `mode`.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let mut temp_name = file_name.to_os_string();
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    let result = (|| -> std::io::Result<()> {
        let _ = fs::remove_file(&temp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    fn names() -> ServingNames {
        ServingNames::new(
            "192.0.2.10".parse().unwrap(),
            ["10.1.2.3".parse().unwrap(), "fd00::7".parse().unwrap()],
        )
    }

    fn cert_der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn roots(pki: &Pki) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(cert_der(&pki.ca.cert_pem)).unwrap();
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Verifies the serving certificate as a TLS client would, for `name`.
    fn verify_serving(pki: &Pki, name: &str) -> Result<(), rustls::Error> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(pki), provider())
            .build()
            .unwrap();
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(
                &cert_der(&pki.serving.cert_pem),
                &[],
                &server_name,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn serving_certificate_chains_to_the_ca_for_every_name() {
        let dir = tempfile::tempdir().unwrap();
        let names = names();
        let pki = ensure(&dir.path().join("tls"), &names).unwrap();
        let expected = [
            "127.0.0.1",
            "::1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.43.0.1",
            "192.0.2.10",
            "10.1.2.3",
            "fd00::7",
        ];
        for name in expected {
            verify_serving(&pki, name).unwrap_or_else(|err| panic!("{name}: {err}"));
        }
        assert!(verify_serving(&pki, "example.com").is_err());
        assert!(verify_serving(&pki, "10.9.9.9").is_err());
    }

    #[test]
    fn admin_certificate_is_a_client_certificate_of_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure(&dir.path().join("tls"), &names()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&pki), provider())
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&cert_der(&pki.admin.cert_pem), &[], UnixTime::now())
            .unwrap();
        // The serving certificate is not usable as a client certificate.
        assert!(
            verifier
                .verify_client_cert(&cert_der(&pki.serving.cert_pem), &[], UnixTime::now())
                .is_err()
        );

        let der = pem_to_der(&pki.admin.cert_pem).unwrap();
        let cert = parse_der(&der).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        let orgs: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cn, vec![ADMIN_USER]);
        assert_eq!(orgs, vec![ADMIN_GROUP]);
    }

    #[test]
    fn a_certificate_from_another_ca_does_not_verify() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let a = ensure(&first.path().join("tls"), &names()).unwrap();
        let b = ensure(&second.path().join("tls"), &names()).unwrap();
        let mixed = Pki {
            ca: a.ca.clone(),
            serving: b.serving.clone(),
            admin: b.admin.clone(),
        };
        assert!(verify_serving(&mixed, "localhost").is_err());
    }

    #[test]
    fn second_run_reuses_everything() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = ensure(&tls, &names()).unwrap();
        let second = ensure(&tls, &names()).unwrap();
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        assert_eq!(first.ca.key_pem, second.ca.key_pem);
        assert_eq!(first.serving.cert_pem, second.serving.cert_pem);
        assert_eq!(first.serving.key_pem, second.serving.key_pem);
        assert_eq!(first.admin.cert_pem, second.admin.cert_pem);
        assert_eq!(first.admin.key_pem, second.admin.key_pem);
    }

    #[test]
    fn keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        ensure(&tls, &names()).unwrap();
        for key in ["ca.key", "apiserver.key", "admin.key"] {
            let mode = fs::metadata(tls.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let mode = fs::metadata(&tls).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_new_address_reissues_only_the_serving_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = ensure(&tls, &names()).unwrap();
        let mut more = names();
        more.ips.insert("198.51.100.7".parse().unwrap());
        let second = ensure(&tls, &more).unwrap();
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        assert_eq!(first.admin.cert_pem, second.admin.cert_pem);
        assert_ne!(first.serving.cert_pem, second.serving.cert_pem);
        verify_serving(&second, "198.51.100.7").unwrap();
        verify_serving(&second, "10.1.2.3").unwrap();
        // Fewer names than the certificate covers: still reused.
        let third = ensure(&tls, &names()).unwrap();
        assert_eq!(second.serving.cert_pem, third.serving.cert_pem);
    }

    #[test]
    fn broken_or_mismatched_leaves_are_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = ensure(&tls, &names()).unwrap();
        fs::write(tls.join("admin.crt"), "garbage").unwrap();
        // A key that does not belong to the serving certificate.
        fs::write(tls.join("apiserver.key"), &first.admin.key_pem).unwrap();
        let second = ensure(&tls, &names()).unwrap();
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        assert_ne!(first.admin.cert_pem, second.admin.cert_pem);
        assert_ne!(first.serving.cert_pem, second.serving.cert_pem);
        verify_serving(&second, "localhost").unwrap();
    }

    #[test]
    fn an_unusable_ca_is_an_error_not_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        ensure(&tls, &names()).unwrap();
        fs::remove_file(tls.join("ca.key")).unwrap();
        let message = format!("{:#}", ensure(&tls, &names()).unwrap_err());
        assert!(message.contains("ca.key"), "{message}");
        assert!(message.contains("delete"), "{message}");

        fs::write(
            tls.join("ca.key"),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let message = format!("{:#}", ensure(&tls, &names()).unwrap_err());
        assert!(message.contains("does not belong"), "{message}");
    }

    #[test]
    fn leaves_close_to_expiry_are_renewed_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let first = ensure(&tls, &names()).unwrap();
        // Issue an admin certificate that expires in 30 days and put it in place.
        let paths = Paths::new(&tls);
        let ca = load_ca(
            first.ca.cert_pem.clone(),
            first.ca.key_pem.clone(),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let issued_long_ago = OffsetDateTime::now_utc() - Duration::days(LEAF_VALIDITY_DAYS - 30);
        let old = issue_leaf(&ca, &Leaf::Admin, issued_long_ago).unwrap();
        write_private(&paths.admin_key, &old.key_pem).unwrap();
        write_file(&paths.admin_cert, &old.cert_pem, 0o644).unwrap();

        let second = ensure(&tls, &names()).unwrap();
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        assert_ne!(second.admin.cert_pem, old.cert_pem);
        assert_eq!(second.serving.cert_pem, first.serving.cert_pem);
    }

    #[test]
    fn serving_certificate_and_key_load_into_rustls() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure(&dir.path().join("tls"), &names()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.serving.key_pem.as_bytes())
            .unwrap();
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der(&pki.serving.cert_pem)], key)
            .unwrap();
    }

    #[test]
    fn serving_names_leave_out_wildcard_bind_addresses() {
        let names = ServingNames::new("0.0.0.0".parse().unwrap(), []);
        assert!(!names.ips.iter().any(|ip| ip.is_unspecified()));
        assert!(names.ips.contains(&IpAddr::V4(FIRST_SERVICE_IP)));
        assert!(names.dns.contains("kubernetes.default.svc.cluster.local"));
    }
}
