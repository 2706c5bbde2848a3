//! Embedding the memory backend in your own engine: one operator instance
//! at parallelism 1 keeps a count and the positions of each word, takes a
//! checkpoint to `file://`, and the state is restored into the fs backend
//! at parallelism 2, where each instance reads back only its key groups.
//!
//! Run: `cargo run -p streamstate-memory --example embed`
use std::collections::BTreeMap;

use streamstate_api::codec::encode_value;
use streamstate_api::key_group::assign_to_key_group;
use streamstate_api::{
    CheckpointStorage, KeyGroupRange, KeyedBackendOptions, KeyedStateBackendExt, MapStateDescriptor, SnapshotTarget,
    StateBackend, ValueStateDescriptor,
};
use streamstate_memory::MemoryStateBackend;

const MAX_PARALLELISM: u32 = 128;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = CheckpointStorage::open(&format!("file://{}", dir.path().display()))?;
    let count = ValueStateDescriptor::<u64>::new("count");
    let positions = MapStateDescriptor::<u32, String>::new("positions");

    // Flink's MemoryStateBackend: a snapshot over the cap (here 1 MiB)
    // fails with a clear error instead of filling the job manager.
    let backend = MemoryStateBackend::with_max_state_size(1 << 20);
    let options = KeyedBackendOptions::new("embed", "words", KeyGroupRange::all(MAX_PARALLELISM), MAX_PARALLELISM);
    let mut keyed = backend.create_keyed_backend(options)?;
    let (count_state, positions_state) = (keyed.value_state(&count)?, keyed.map_state(&positions)?);
    let text = "the quick brown fox jumps over the lazy dog the end";
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (position, word) in text.split(' ').enumerate() {
        *expected.entry(word).or_default() += 1;
        // Every state call acts on the current key.
        keyed.set_current_key_typed(word)?;
        let seen = count_state.value(keyed.as_mut())?.unwrap_or(0);
        count_state.update(keyed.as_mut(), &(seen + 1))?;
        positions_state.put(keyed.as_mut(), &(position as u32), &word.to_owned())?;
    }

    // The synchronous phase captures a view; the upload may run on another thread.
    let target = SnapshotTarget::checkpoint("embed", 1, "words-0");
    let pending = keyed.snapshot(&target)?;
    let upload_storage = storage.clone();
    let handle = std::thread::spawn(move || pending.write(&upload_storage, &target))
        .join()
        .expect("upload thread")?;
    println!(
        "checkpoint 1: {} file(s), {} bytes",
        handle.files.len(),
        handle.full_bytes
    );

    // Restore into another backend at another parallelism.
    let mut restored_words = 0;
    for subtask in 0..2 {
        let range = KeyGroupRange::for_subtask(MAX_PARALLELISM, 2, subtask);
        let options = KeyedBackendOptions::new("embed", "words", range, MAX_PARALLELISM);
        let mut restored = streamstate_fs::FsStateBackend::new().restore_keyed_backend(
            options,
            std::slice::from_ref(&handle),
            &storage,
        )?;
        let (count_state, positions_state) = (restored.value_state(&count)?, restored.map_state(&positions)?);
        for (word, n) in &expected {
            if !range.contains(assign_to_key_group(&encode_value(word)?, MAX_PARALLELISM)) {
                continue;
            }
            restored.set_current_key_typed(word)?;
            assert_eq!(count_state.value(restored.as_mut())?, Some(*n), "count of {word}");
            let at = positions_state.entries(restored.as_mut())?;
            assert_eq!(at.len() as u64, *n, "positions of {word}");
            assert!(at.iter().all(|(_, w)| w == word));
            restored_words += 1;
        }
        println!("subtask {subtask} of 2 owns key groups {range:?}");
    }
    assert_eq!(restored_words, expected.len());
    println!("restored {restored_words} words into the fs backend at parallelism 2");
    Ok(())
}
