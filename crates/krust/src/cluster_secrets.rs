//! The secrets every server of one cluster must share, kept in the datastore so that
//! servers on one etcd agree without copying files: the cluster CA (certificate and
//! key: every server's serving certificate, the admin kubeconfigs and the nodes'
//! certificates chain to it, and pods trust it through `kube-root-ca.crt`) and the
//! service account signing key (a token one server issued verifies on every other).
//!
//! The record lives under [`KEY`], outside the `/registry/` keys the API serves, so
//! no API request reads it; whoever can read the datastore could read every Secret
//! anyway. The first server to start on a datastore writes its own (its CA made or
//! found in its `tls/` dir as before); every later one adopts the record into its
//! `tls/` dir before [`crate::pki::ensure`] issues its serving certificate from it. A
//! data dir that already holds another CA is refused with what to do, never
//! overwritten: replacing a CA silently would break every kubeconfig it issued.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::pki::{self, ServingNames};

/// The datastore key of the record.
pub const KEY: &str = "/krust/cluster-secrets";

/// The shared secrets, PEM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterSecrets {
    ca_cert: String,
    ca_key: String,
    service_account_key: String,
}

/// The files of the secrets in a server's `tls/` dir.
struct Files<'a> {
    dir: &'a Path,
}

impl Files<'_> {
    fn ca_cert(&self) -> std::path::PathBuf {
        self.dir.join("ca.crt")
    }
    fn ca_key(&self) -> std::path::PathBuf {
        self.dir.join("ca.key")
    }
    fn service_account_key(&self) -> std::path::PathBuf {
        self.dir.join(pki::SERVICE_ACCOUNT_KEY_FILE)
    }
}

/// Makes `tls_dir` hold the cluster's shared secrets: the datastore's record when
/// there is one (written into the dir, or checked against what the dir holds), else
/// this server's own, which become the record. `own_service_account_key`: the key
/// given with `--service-account-key-file`, which is used as given (and shared when
/// this server writes the record).
pub async fn share(
    store: &Arc<dyn krust_store::Store>,
    tls_dir: &Path,
    names: &ServingNames,
    own_service_account_key: Option<&str>,
) -> Result<()> {
    let files = Files { dir: tls_dir };
    // Twice at most: a server that loses the race to write the record adopts the
    // winner's.
    for _ in 0..2 {
        if let Some(record) = store
            .get(KEY)
            .await
            .context("cannot read the cluster's shared secrets from the datastore")?
        {
            let secrets: ClusterSecrets =
                serde_json::from_slice(&record.value).with_context(|| {
                    format!("the datastore's {KEY} is not a record krust wrote; remove that key")
                })?;
            return adopt(&files, &secrets, own_service_account_key.is_some());
        }
        pki::ensure(tls_dir, names)?;
        let service_account_key = match own_service_account_key {
            Some(key) => key.to_string(),
            None => pki::ensure_service_account_key(&files.service_account_key())?,
        };
        let secrets = ClusterSecrets {
            ca_cert: read(&files.ca_cert())?,
            ca_key: read(&files.ca_key())?,
            service_account_key,
        };
        let value = Bytes::from(serde_json::to_vec(&secrets)?);
        match store.create(KEY, value).await {
            Ok(_) => {
                tracing::info!("this server's CA and service account key are now the cluster's");
                return Ok(());
            }
            Err(krust_store::Error::AlreadyExists(_)) => continue,
            Err(error) => {
                return Err(error).context("cannot record the cluster's secrets in the datastore");
            }
        }
    }
    bail!("the cluster's shared secrets in the datastore keep changing; try again")
}

/// Writes the record's secrets into the dir where they are missing, and refuses a
/// dir whose own differ.
fn adopt(files: &Files<'_>, secrets: &ClusterSecrets, own_service_account_key: bool) -> Result<()> {
    let start_over = |what: &str| {
        format!(
            "this data dir's {what} is not the one of the cluster on this datastore: to join the cluster, delete {} (kubeconfigs this server issued stop working), or use another --datastore",
            files.dir.display()
        )
    };
    let ca_cert = files.ca_cert();
    if ca_cert.exists() {
        if read(&ca_cert)?.trim() != secrets.ca_cert.trim() {
            bail!("{}", start_over("cluster CA (tls/ca.crt)"));
        }
    } else {
        tracing::info!("joining the cluster: using the CA of the servers on this datastore");
        pki::create_private_dir(files.dir)?;
        pki::write_private(&files.ca_key(), &secrets.ca_key)?;
        pki::write_file(&ca_cert, &secrets.ca_cert, 0o644)?;
    }
    if own_service_account_key {
        return Ok(());
    }
    let key = files.service_account_key();
    if key.exists() {
        if read(&key)?.trim() != secrets.service_account_key.trim() {
            bail!(
                "{}",
                start_over(&format!(
                    "service account key (tls/{})",
                    pki::SERVICE_ACCOUNT_KEY_FILE
                ))
            );
        }
    } else {
        pki::write_private(&key, &secrets.service_account_key)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ServingNames {
        ServingNames::new("127.0.0.1".parse().unwrap(), [])
    }

    fn store() -> Arc<dyn krust_store::Store> {
        Arc::new(krust_store::memory::MemoryStore::new())
    }

    #[tokio::test]
    async fn the_first_server_records_its_secrets_and_the_next_adopts_them() {
        let store = store();
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let (a, b) = (first.path().join("tls"), second.path().join("tls"));
        share(&store, &a, &names(), None).await.unwrap();
        share(&store, &b, &names(), None).await.unwrap();
        for file in ["ca.crt", "ca.key", pki::SERVICE_ACCOUNT_KEY_FILE] {
            assert_eq!(
                std::fs::read_to_string(a.join(file)).unwrap(),
                std::fs::read_to_string(b.join(file)).unwrap(),
                "{file}"
            );
        }
        // The adopted CA issues the second server's certificates.
        let pki_b = pki::ensure(&b, &names()).unwrap();
        assert_eq!(
            pki_b.ca.cert_pem,
            std::fs::read_to_string(a.join("ca.crt")).unwrap()
        );
        // Starting again changes nothing.
        share(&store, &a, &names(), None).await.unwrap();
        share(&store, &b, &names(), None).await.unwrap();
    }

    #[tokio::test]
    async fn a_data_dir_with_another_ca_is_refused_and_left_alone() {
        let store = store();
        let first = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        share(&store, &first.path().join("tls"), &names(), None)
            .await
            .unwrap();
        let tls = other.path().join("tls");
        pki::ensure(&tls, &names()).unwrap();
        let before = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
        let error = share(&store, &tls, &names(), None).await.unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("cluster CA (tls/ca.crt)"), "{message}");
        assert!(message.contains("to join the cluster, delete"), "{message}");
        assert_eq!(std::fs::read_to_string(tls.join("ca.crt")).unwrap(), before);
    }

    #[tokio::test]
    async fn a_given_service_account_key_is_shared_and_used_as_given() {
        let store = store();
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        share(&store, &first.path().join("tls"), &names(), Some(&key))
            .await
            .unwrap();
        let b = second.path().join("tls");
        share(&store, &b, &names(), None).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(b.join(pki::SERVICE_ACCOUNT_KEY_FILE)).unwrap(),
            key
        );
    }

    #[tokio::test]
    async fn a_record_krust_did_not_write_is_an_error_that_names_the_key() {
        let store = store();
        store
            .create(KEY, Bytes::from_static(b"not json"))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let error = share(&store, &dir.path().join("tls"), &names(), None)
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains(KEY), "{error:#}");
    }
}
