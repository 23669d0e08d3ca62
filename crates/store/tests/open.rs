//! `krust_store::open` picks the backend from the `--datastore` value.

mod support;

use bytes::Bytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connects_to_etcd_by_url() {
    let server = support::EtcdServer::start().await;
    let spec = format!("etcd://{}", server.endpoint.trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let store = krust_store::open(Some(&spec), dir.path()).await.unwrap();
    let revision = store
        .create("/opened", Bytes::from_static(b"v"))
        .await
        .unwrap();
    assert_eq!(
        store.get("/opened").await.unwrap().unwrap().mod_revision,
        revision
    );
    // Nothing was written to the data dir: the state lives in etcd.
    assert!(!dir.path().join("state.db").exists());
}

#[tokio::test]
async fn open_reports_an_unreachable_etcd() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("etcd://127.0.0.1:{port}");
    let err = krust_store::open(Some(&spec), dir.path())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("etcd at"), "{err}");
}
