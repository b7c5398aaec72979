//! The S3 destination against a real S3-compatible server (SeaweedFS, `iot_testkit::s3`): a
//! backup stored under the prefix, the oldest deleted beyond `keep`, fetched back whole; and a
//! wrong secret key or bucket fails with the words that say what to fix.

use std::path::Path;

use iot_backup::Destination;
use iot_backup::names::Wanted;
use iot_common::backup_result::BackupResult;
use iot_testkit::s3::S3Server;

fn source(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("source");
    std::fs::create_dir_all(source.join("dht")).expect("mkdir");
    std::fs::write(source.join("dht/20270101T000000Z.manifest"), b"{}").expect("manifest");
    let shard: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(source.join("dht/20270101T000000Z.s1.tar.gz"), shard).expect("shard");
    source
}

fn destination(s3: &S3Server, bucket: &str, secret_key: &str) -> Destination {
    Destination {
        s3_endpoint: Some(s3.endpoint_for_host.clone()),
        s3_bucket: Some(bucket.to_owned()),
        s3_prefix: "site-a/lab".into(),
        access_key_id: s3.access_key.clone(),
        secret_access_key: secret_key.to_owned(),
        credentials_secret: Some("s3-keys".into()),
        ..Destination::default()
    }
}

#[tokio::test]
async fn backups_go_to_the_bucket_under_the_prefix_and_come_back() {
    let s3 = S3Server::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = source(tmp.path());
    // Two old backups of this monitor and an object of someone else's under the prefix.
    for key in [
        "site-a/lab/lab-20200101T000000Z.tar.gz",
        "site-a/lab/lab-20200102T000000Z.tar.gz",
        "site-a/lab/notes/lab-20200103T000000Z.tar.gz",
    ] {
        s3.put(key, b"old".to_vec()).await;
    }
    let to = destination(&s3, &s3.bucket, &s3.secret_key);
    let stored = iot_backup::store(&to, &source, tmp.path(), "lab", 2)
        .await
        .expect("stored");
    let BackupResult::Stored {
        name,
        size,
        deleted,
        ..
    } = stored
    else {
        panic!("{stored:?}");
    };
    assert_eq!(deleted, ["lab-20200101T000000Z.tar.gz"]);
    let keys: Vec<String> = s3.list("").await.into_iter().map(|o| o.key).collect();
    assert_eq!(
        keys,
        [
            "site-a/lab/lab-20200102T000000Z.tar.gz".to_owned(),
            format!("site-a/lab/{name}"),
            "site-a/lab/notes/lab-20200103T000000Z.tar.gz".to_owned(),
        ],
        "the oldest went; an object in a folder below is not ours"
    );

    let restore = tmp.path().join("restore");
    std::fs::create_dir_all(&restore).expect("mkdir");
    let fetched = iot_backup::fetch(&to, "lab", &Wanted::Latest, &restore)
        .await
        .expect("fetched");
    assert_eq!(fetched, BackupResult::Fetched { name, size });
    assert_eq!(
        std::fs::read(restore.join("data/dht/20270101T000000Z.s1.tar.gz")).expect("shard"),
        std::fs::read(source.join("dht/20270101T000000Z.s1.tar.gz")).expect("shard")
    );
}

#[tokio::test]
async fn a_wrong_secret_or_bucket_says_what_to_fix() {
    let s3 = S3Server::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = source(tmp.path());

    let wrong_key = destination(&s3, &s3.bucket, "not-the-secret-key");
    let error = iot_backup::store(&wrong_key, &source, tmp.path(), "lab", 3)
        .await
        .expect_err("refused");
    let fix = error.fix(&wrong_key).unwrap_or_default();
    assert!(
        fix.contains("check the access key and secret key in Secret s3-keys"),
        "{error}: {fix}"
    );

    let wrong_bucket = destination(&s3, "no-such-bucket", &s3.secret_key);
    let error = iot_backup::store(&wrong_bucket, &source, tmp.path(), "lab", 3)
        .await
        .expect_err("no bucket");
    let fix = error.fix(&wrong_bucket).unwrap_or_default();
    assert!(
        fix.contains("bucket no-such-bucket does not exist")
            && fix.contains("destination.s3.bucket"),
        "{error}: {fix}"
    );
    assert!(s3.list("").await.is_empty(), "nothing was stored");
}
