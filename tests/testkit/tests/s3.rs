//! The tests' S3 server (`iot_testkit::s3`) behaves as an S3 does: what a signed client puts is
//! listed and read back byte for byte, a wrong secret or bucket is refused and stores nothing,
//! and the server is gone with its data when dropped. No cluster needed (loopback).

use std::path::PathBuf;

use iot_testkit::s3::{S3Object, S3Server};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

#[tokio::test]
async fn what_a_client_puts_is_listed_and_read_back() {
    let s3 = S3Server::start().await;
    assert!(s3.list("").await.is_empty(), "a new bucket is empty");

    // A backup's shape: a few files under a dated prefix, one of them larger than a request line.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    s3.put("backups/20261206T120000Z/meta.00", b"meta".to_vec())
        .await;
    s3.put("backups/20261206T120000Z/s1.tar.gz", big.clone())
        .await;
    s3.put("other/note", b"not a backup".to_vec()).await;

    assert_eq!(
        s3.list("backups").await,
        vec![
            S3Object {
                key: "backups/20261206T120000Z/meta.00".into(),
                size: 4
            },
            S3Object {
                key: "backups/20261206T120000Z/s1.tar.gz".into(),
                size: big.len() as u64
            },
        ]
    );
    assert_eq!(s3.list("").await.len(), 3);
    assert_eq!(s3.get("backups/20261206T120000Z/s1.tar.gz").await, big);
    assert_eq!(s3.get("other/note").await, b"not a backup");
}

#[tokio::test]
async fn a_wrong_secret_or_bucket_is_refused_and_stores_nothing() {
    let s3 = S3Server::start().await;
    let payload = || PutPayload::from(b"x".to_vec());
    let key = Path::from("backups/refused");

    let wrong_secret = s3.store_with(&s3.bucket, &s3.access_key, "not-the-secret");
    let err = wrong_secret
        .put(&key, payload())
        .await
        .expect_err("a wrong secret is refused");
    assert!(
        err.to_string().contains("SignatureDoesNotMatch"),
        "the refusal names the cause: {err}"
    );

    let wrong_key = s3.store_with(&s3.bucket, "NOSUCHKEY", &s3.secret_key);
    let err = wrong_key
        .put(&key, payload())
        .await
        .expect_err("an unknown access key is refused");
    assert!(
        err.to_string().contains("InvalidAccessKeyId"),
        "the refusal names the cause: {err}"
    );

    let wrong_bucket = s3.store_with("no-such-bucket", &s3.access_key, &s3.secret_key);
    let err = wrong_bucket
        .put(&key, payload())
        .await
        .expect_err("a bucket that does not exist is not created on upload");
    assert!(
        err.to_string().contains("NoSuchBucket"),
        "the refusal names the cause: {err}"
    );

    assert!(s3.list("").await.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn a_dropped_server_is_stopped_and_its_data_removed() {
    let s3 = S3Server::start().await;
    s3.put("a", b"a".to_vec()).await;
    let pid = s3.pid();
    let data = data_dir_of(pid);
    assert!(data.exists(), "{} holds the data", data.display());
    drop(s3);
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "process {pid} is gone"
    );
    assert!(!data.exists(), "{} is removed", data.display());
}

/// The `-dir=` of the process's command line.
fn data_dir_of(pid: u32) -> PathBuf {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the server's command line");
    cmdline
        .split(|b| *b == 0)
        .find_map(|arg| arg.strip_prefix(b"-dir="))
        .map(|d| PathBuf::from(String::from_utf8_lossy(d).into_owned()))
        .expect("weed server -dir=...")
}
