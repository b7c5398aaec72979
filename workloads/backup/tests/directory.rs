//! A backup stored in a directory (the backup volume's case), the oldest deleted beyond `keep`,
//! and fetched back byte for byte; files that are not this monitor's backups are never touched.

use std::path::Path;

use iot_backup::Destination;
use iot_backup::names::Wanted;
use iot_common::backup_result::BackupResult;

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

fn dir_destination(dir: &Path) -> Destination {
    Destination {
        dir: Some(dir.to_path_buf()),
        ..Destination::default()
    }
}

#[tokio::test]
async fn a_stored_backup_comes_back_whole_and_only_keep_remain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source, work, backups, restore) = (
        tmp.path().join("source"),
        tmp.path().join("work"),
        tmp.path().join("backups"),
        tmp.path().join("restore"),
    );
    // What `influxd backup -portable` leaves: a manifest and shard files, per database.
    write(
        &source.join("dht/20270101T000000Z.manifest"),
        b"{\"files\":[]}",
    );
    let shard: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    write(&source.join("dht/20270101T000000Z.s1.tar.gz"), &shard);
    write(&source.join("aqi/20270101T000000Z.meta"), b"meta");
    std::fs::create_dir_all(&work).expect("work");
    std::fs::create_dir_all(&restore).expect("restore");
    // Two older backups of this monitor, one of another, and a file of someone else.
    for old in [
        "lab-20200101T000000Z.tar.gz",
        "lab-20200102T000000Z.tar.gz",
        "lab-2-20200101T000000Z.tar.gz",
        "notes.txt",
    ] {
        write(&backups.join(old), b"old");
    }

    let destination = dir_destination(&backups);
    let result = iot_backup::store(&destination, &source, &work, "lab", 2)
        .await
        .expect("stored");
    let BackupResult::Stored {
        name,
        size,
        deleted,
        kept,
        ..
    } = result
    else {
        panic!("not stored: {result:?}");
    };
    assert!(size > 0);
    assert_eq!(deleted, ["lab-20200101T000000Z.tar.gz"]);
    assert_eq!(
        kept,
        ["lab-20200102T000000Z.tar.gz".to_owned(), name.clone()]
    );
    let mut left: Vec<String> = std::fs::read_dir(&backups)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "lab-2-20200101T000000Z.tar.gz",
            "lab-20200102T000000Z.tar.gz",
            &name,
            "notes.txt"
        ],
        "only this monitor's oldest backup went"
    );
    assert_eq!(
        std::fs::read_dir(&work).expect("work").count(),
        0,
        "the archive is not left behind"
    );

    let fetched = iot_backup::fetch(&destination, "lab", &Wanted::Latest, &restore)
        .await
        .expect("fetched");
    assert_eq!(
        fetched,
        BackupResult::Fetched {
            name: name.clone(),
            size
        }
    );
    assert_eq!(
        std::fs::read(restore.join("data/dht/20270101T000000Z.s1.tar.gz")).expect("shard"),
        shard
    );
    assert_eq!(
        std::fs::read(restore.join("data/aqi/20270101T000000Z.meta")).expect("meta"),
        b"meta"
    );
    assert_eq!(
        std::fs::read_to_string(restore.join("name")).expect("name"),
        name
    );
    // Fetched again over the first (an interrupted restore's second try).
    iot_backup::fetch(&destination, "lab", &Wanted::Named(name.clone()), &restore)
        .await
        .expect("fetched again");
}

#[tokio::test]
async fn a_missing_backup_says_which_there_are() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let backups = tmp.path().join("backups");
    write(&backups.join("lab-20200101T000000Z.tar.gz"), b"x");
    let destination = dir_destination(&backups);
    let error = iot_backup::fetch(
        &destination,
        "lab",
        &Wanted::parse("lab-20990101T000000Z"),
        tmp.path(),
    )
    .await
    .expect_err("no such backup");
    let text = error.to_string();
    assert!(text.contains("lab-20200101T000000Z.tar.gz"), "{text}");
    assert!(
        error
            .fix(&destination)
            .is_some_and(|f| f.contains("restoreFrom"))
    );
    let none = iot_backup::fetch(&destination, "other", &Wanted::Latest, tmp.path())
        .await
        .expect_err("no backup of other");
    assert!(none.to_string().contains("no backup of other"), "{none}");
}

#[tokio::test]
async fn an_empty_source_is_refused_before_anything_is_stored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    std::fs::create_dir_all(source.join("dht")).expect("mkdir");
    let backups = tmp.path().join("backups");
    let error = iot_backup::store(&dir_destination(&backups), &source, tmp.path(), "lab", 3)
        .await
        .expect_err("nothing to store");
    assert!(error.to_string().contains("holds no file"), "{error}");
    assert!(!backups.exists() || std::fs::read_dir(&backups).expect("ls").count() == 0);
}
