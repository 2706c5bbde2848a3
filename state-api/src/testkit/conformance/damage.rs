//! Conformance cases: Damaged or unsupported snapshots: missing, corrupt and truncated files, unsupported requests.

use super::support::*;
use crate::backend::SnapshotFormat;
use crate::testkit::TestTarget;
use crate::ErrorKind;

pub fn restore_from_missing_file_is_not_found(t: &TestTarget) {
    let fixture = (t.storage)();
    let mut b = backend(t);
    populate(b.as_mut(), 10);
    let handle = snapshot(t, b.as_mut(), &fixture.storage, 1, "op-0");
    let victim = handle.files[0].path.clone();
    fixture.storage.delete(&victim).unwrap();
    let err = restore_err(t, &fixture.storage, handle);
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(&victim), "error must name the file: {err}");
}

pub fn restore_from_corrupt_file_is_checksum_mismatch(t: &TestTarget) {
    let err = restore_after_damage(t, |mut bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        bytes
    });
    assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{err}");
}

pub fn restore_from_truncated_file_is_detected(t: &TestTarget) {
    let err = restore_after_damage(t, |mut bytes| {
        bytes.truncate(bytes.len() - 7);
        bytes
    });
    assert!(
        matches!(err.kind(), ErrorKind::ChecksumMismatch | ErrorKind::Corrupt),
        "{err}"
    );
}

pub fn unsupported_snapshot_request_is_unsupported_error(t: &TestTarget) {
    let mut b = backend(t);
    let caps = b.capabilities();
    let mut asked = 0;
    if !caps.native_snapshots {
        let mut target = target_for(t, 1, "op-0");
        target.format = SnapshotFormat::Native;
        assert_eq!(
            b.snapshot(&target).err().map(|e| e.kind()),
            Some(ErrorKind::Unsupported)
        );
        asked += 1;
    }
    if !caps.incremental_snapshots {
        let mut target = target_for(t, 1, "op-0");
        target.incremental = true;
        assert_eq!(
            b.snapshot(&target).err().map(|e| e.kind()),
            Some(ErrorKind::Unsupported)
        );
        asked += 1;
    }
    if !caps.canonical_snapshots {
        let target = target_for(t, 1, "op-0");
        assert_eq!(
            b.snapshot(&target).err().map(|e| e.kind()),
            Some(ErrorKind::Unsupported)
        );
        asked += 1;
    }
    if asked == 0 {
        // A backend that supports everything must then honour every request.
        let fixture = (t.storage)();
        let mut target = target_for(t, 1, "op-0");
        target.incremental = true;
        target.format = SnapshotFormat::Native;
        b.snapshot(&target).unwrap().write(&fixture.storage, &target).unwrap();
    }
}

/// The cases above, for [`crate::conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_damage {
    ($target:expr) => {
        $crate::__conformance_cases!($target; damage;
            restore_from_missing_file_is_not_found,
            restore_from_corrupt_file_is_checksum_mismatch,
            restore_from_truncated_file_is_detected,
            unsupported_snapshot_request_is_unsupported_error,
        );
    };
}
