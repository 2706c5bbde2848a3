//! The canonical format's unit tests: round trips, deltas, damage.

use super::*;
use crate::codec::put_length_prefixed;
use crate::descriptor::{StateKind, StateMeta};
use crate::key_group::KeyGroupRange;
use crate::ttl::TtlConfig;
use crate::{ttl, ErrorKind};

fn states() -> Vec<StateMeta> {
    vec![
        StateMeta::new::<u64>("v", StateKind::Value),
        StateMeta::new::<u64>("m", StateKind::Map),
    ]
}

fn sample() -> Vec<u8> {
    let mut w = CanonicalWriter::new(states(), KeyGroupRange::new(0, 9), 0);
    w.start_key_group(2).unwrap();
    w.add_cell(0, b"a", b"1").unwrap();
    w.add_map_entry(1, b"a", b"x", b"2").unwrap();
    w.start_key_group(5).unwrap();
    w.start_key_group(7).unwrap();
    w.add_cell(0, b"b", b"3").unwrap();
    w.finish().unwrap()
}

#[test]
fn round_trip_keeps_records_and_skips_empty_groups() {
    let bytes = sample();
    let (index, records) = parse_file(&bytes).unwrap();
    assert_eq!(index.blocks.len(), 2);
    assert_eq!(records.len(), 3);
    assert_eq!(records[1].user_key, Some(&b"x"[..]));
    assert_eq!(records[2].key_group, 7);
}

#[test]
fn every_single_byte_flip_is_detected() {
    let bytes = sample();
    for i in 0..bytes.len() {
        let mut copy = bytes.clone();
        copy[i] ^= 0x40;
        assert!(parse_file(&copy).is_err(), "flip at {i} went unnoticed");
    }
}

#[test]
fn every_truncation_is_detected() {
    let bytes = sample();
    for len in 0..bytes.len() {
        assert!(parse_file(&bytes[..len]).is_err(), "truncation to {len} went unnoticed");
    }
}

fn sample_delta() -> Vec<u8> {
    let mut w = CanonicalWriter::new_delta(states(), KeyGroupRange::new(0, 9), 0);
    w.start_key_group(2).unwrap();
    w.add_removal(0, b"a").unwrap();
    w.add_removal(1, b"a").unwrap();
    w.add_map_entry(1, b"a", b"y", b"4").unwrap();
    w.start_key_group(7).unwrap();
    w.add_cell(0, b"b", b"5").unwrap();
    w.finish().unwrap()
}

#[test]
fn delta_files_carry_removals_in_order() {
    let bytes = sample_delta();
    let (index, records) = parse_file(&bytes).unwrap();
    assert!(index.delta);
    let summary: Vec<_> = records
        .iter()
        .map(|r| (r.state_index, r.key, r.user_key, r.value, r.removed))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, &b"a"[..], None, &b""[..], true),
            (1, &b"a"[..], None, &b""[..], true),
            (1, &b"a"[..], Some(&b"y"[..]), &b"4"[..], false),
            (0, &b"b"[..], None, &b"5"[..], false),
        ]
    );
    for i in 0..bytes.len() {
        let mut copy = bytes.clone();
        copy[i] ^= 0x40;
        assert!(parse_file(&copy).is_err(), "flip at {i} went unnoticed");
    }
    // A full file has no removals and its index says so.
    let full = sample();
    let (index, records) = parse_file(&full).unwrap();
    assert!(!index.delta && records.iter().all(|r| !r.removed));
    let mut full = CanonicalWriter::new(states(), KeyGroupRange::new(0, 9), 0);
    full.start_key_group(1).unwrap();
    assert_eq!(
        full.add_removal(0, b"a").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn expired_cells_become_removals_in_deltas() {
    let mut meta = StateMeta::new::<u64>("t", StateKind::Value);
    meta.ttl = Some(TtlConfig::new(std::time::Duration::from_millis(5)));
    let mut expired = Vec::new();
    ttl::wrap_into(10, b"e", &mut expired);
    let mut w = CanonicalWriter::new_delta(vec![meta], KeyGroupRange::new(0, 0), 50);
    w.start_key_group(0).unwrap();
    w.add_cell(0, b"k", &expired).unwrap();
    let bytes = w.finish().unwrap();
    let (_, records) = parse_file(&bytes).unwrap();
    assert_eq!(records.len(), 1);
    assert!(records[0].removed);
}

#[test]
fn newer_version_is_a_typed_error() {
    let mut bytes = sample();
    let n = bytes.len();
    bytes[n - 12..n - 8].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = parse_file(&bytes).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IncompatibleVersion);
}

#[test]
fn every_version_from_the_oldest_readable_parses_and_version_0_does_not() {
    for version in 0..=FORMAT_VERSION {
        let mut bytes = sample();
        let n = bytes.len();
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        bytes[n - 12..n - 8].copy_from_slice(&version.to_le_bytes());
        let parsed = parse_file(&bytes);
        assert_eq!(parsed.is_ok(), version >= OLDEST_READABLE_VERSION, "version {version}");
    }
}

#[test]
fn key_groups_must_ascend_within_range() {
    let mut w = CanonicalWriter::new(states(), KeyGroupRange::new(0, 9), 0);
    w.start_key_group(3).unwrap();
    assert!(w.start_key_group(3).is_err());
    assert!(w.start_key_group(10).is_err());
    assert!(w.add_map_entry(0, b"k", b"u", b"v").is_err());
}

#[test]
fn expired_ttl_values_are_purged() {
    let mut meta = StateMeta::new::<u64>("t", StateKind::List);
    meta.ttl = Some(TtlConfig::new(std::time::Duration::from_millis(5)));
    let mut cell = Vec::new();
    for expires in [10u64, 100] {
        let mut element = Vec::new();
        ttl::wrap_into(expires, b"e", &mut element);
        put_length_prefixed(&mut cell, &element);
    }
    let mut w = CanonicalWriter::new(vec![meta], KeyGroupRange::new(0, 0), 50);
    w.start_key_group(0).unwrap();
    w.add_cell(0, b"k", &cell).unwrap();
    let bytes = w.finish().unwrap();
    let (_, records) = parse_file(&bytes).unwrap();
    let elements = crate::codec::list_elements(records[0].value).unwrap();
    assert_eq!(elements.len(), 1);
    assert_eq!(ttl::unwrap(elements[0]).unwrap().0, 100);
}
