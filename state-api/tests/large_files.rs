//! Files larger than one upload part (8 MiB) go up from a local file and
//! come back into one a part at a time, on `file://`, a real S3 server
//! (multipart upload) and a real HDFS; a recorded size or checksum that
//! does not match fails the read naming the file.
#![allow(clippy::unwrap_used)]

use streamstate_api::testkit::StorageFixture;
use streamstate_api::{ErrorKind, FileRef};

/// 20 MiB and a bit: two full parts and a short one, bytes that differ per
/// position so a part written twice or out of order is caught.
fn large_local_file(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..(20u32 << 20) + 12_345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = dir.join("large.bin");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn round_trip(fixture: &StorageFixture) {
    let storage = &fixture.storage;
    let local = tempfile::tempdir().unwrap();
    let (path, bytes) = large_local_file(local.path());
    let file = storage.write_from_file("job/shared/large.bin", &path).unwrap();
    assert_eq!(file.size, bytes.len() as u64);
    assert_eq!(file.crc32c, crc32c::crc32c(&bytes));
    assert_eq!(storage.read_verified(&file).unwrap(), bytes, "read back whole");

    let copy = local.path().join("copy.bin");
    storage.read_verified_into(&file, &copy).unwrap();
    assert!(std::fs::read(&copy).unwrap() == bytes, "read back in parts");

    for (what, wrong) in [
        (
            "checksum",
            FileRef {
                crc32c: file.crc32c ^ 1,
                ..file.clone()
            },
        ),
        (
            "size",
            FileRef {
                size: file.size - 1,
                ..file.clone()
            },
        ),
    ] {
        let err = storage.read_verified_into(&wrong, &copy).expect_err(what);
        assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{what}: {err}");
        assert!(err.to_string().contains("job/shared/large.bin"), "{what}: {err}");
    }
    let missing = local.path().join("missing.bin");
    let err = storage.write_from_file("job/shared/missing.bin", &missing).unwrap_err();
    assert!(err.to_string().contains("missing.bin"), "{err}");
}

#[test]
fn large_files_round_trip_in_parts_on_file_storage() {
    round_trip(&StorageFixture::local_dir());
}

#[test]
fn large_files_round_trip_in_parts_on_s3() {
    round_trip(&StorageFixture::from_env("STREAMSTATE_TEST_S3_URI"));
}

#[test]
fn large_files_round_trip_in_parts_on_hdfs() {
    round_trip(&StorageFixture::from_env("STREAMSTATE_TEST_HDFS_URI"));
}
