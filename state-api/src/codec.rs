//! Byte-level encodings shared by the typed state layer and the snapshot
//! format: user values (postcard), LEB128 varints, and list cells.
//!
//! A list state's cell is the concatenation of its elements, each framed as
//! `varint(len) ++ bytes`. Appending an element is then a pure byte append,
//! which RocksDB's merge operator (and the heap backend's `Vec::extend`) can
//! do without reading the list first.

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, ErrorKind, Result};

/// Serializes a user value with postcard, appending to `out`.
///
/// # Errors
/// [`ErrorKind::Serialization`] when the type cannot be serialized.
pub fn encode_value_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    postcard::to_io(value, &mut *out)
        .map(|_| ())
        .map_err(|e| Error::new(ErrorKind::Serialization, "cannot serialize value").with_source(e))
}

/// Runs `f` with an empty byte buffer reused across calls on this thread,
/// so encoding a value per state access does not allocate. Reentrant: a
/// nested call gets a buffer of its own.
///
/// ```
/// use streamstate_api::codec::{encode_value_into, with_scratch};
/// let len = with_scratch(|buf| {
///     encode_value_into(&42u64, buf).unwrap();
///     buf.len()
/// });
/// assert_eq!(len, 1);
/// ```
pub fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buf = SCRATCH.take();
    buf.clear();
    let result = f(&mut buf);
    // Keep a buffer of everyday size; let a huge one go.
    if buf.capacity() <= 64 << 10 {
        SCRATCH.set(buf);
    }
    result
}

/// Serializes a user value with postcard into a new buffer.
///
/// # Errors
/// [`ErrorKind::Serialization`] when the type cannot be serialized.
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_value_into(value, &mut out)?;
    Ok(out)
}

/// Deserializes a user value written by [`encode_value`].
///
/// # Errors
/// [`ErrorKind::Serialization`] when the bytes are not a valid `T`.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Serialization,
            format!(
                "cannot deserialize {} from {} bytes",
                std::any::type_name::<T>(),
                bytes.len()
            ),
        )
        .with_source(e)
    })
}

/// Appends `value` as an unsigned LEB128 varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 varint from the front of `input`, advancing it.
///
/// # Errors
/// [`ErrorKind::Corrupt`] on a truncated or over-long varint.
#[inline]
pub fn get_varint(input: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for (i, byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i == 9 && *byte > 1 {
                break;
            }
            *input = &input[i + 1..];
            return Ok(value);
        }
    }
    Err(Error::corrupt("truncated or over-long varint"))
}

/// Reads a `varint(len) ++ bytes` frame from the front of `input`.
///
/// The length is checked against the bytes that remain, so a corrupt length
/// can never make the reader allocate or read past the buffer.
///
/// # Errors
/// [`ErrorKind::Corrupt`] when the frame is truncated.
#[inline]
pub fn get_length_prefixed<'a>(input: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = get_varint(input)?;
    if len > input.len() as u64 {
        return Err(Error::corrupt(format!(
            "frame length {len} exceeds the {} bytes that remain",
            input.len()
        )));
    }
    let (frame, rest) = input.split_at(len as usize);
    *input = rest;
    Ok(frame)
}

/// Appends a `varint(len) ++ bytes` frame.
#[inline]
pub fn put_length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Splits a list cell into its element frames.
///
/// # Errors
/// [`ErrorKind::Corrupt`] when a frame is truncated.
pub fn list_elements(cell: &[u8]) -> Result<Vec<&[u8]>> {
    let mut rest = cell;
    let mut elements = Vec::new();
    while !rest.is_empty() {
        elements.push(get_length_prefixed(&mut rest)?);
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<u64>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut slice = &buf[..];
            prop_assert_eq!(get_varint(&mut slice).unwrap(), v);
            prop_assert!(slice.is_empty());
        }

        #[test]
        fn list_cells_round_trip(elements in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..10)) {
            let mut cell = Vec::new();
            for e in &elements {
                put_length_prefixed(&mut cell, e);
            }
            let decoded: Vec<Vec<u8>> = list_elements(&cell).unwrap().into_iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(decoded, elements);
        }
    }

    #[test]
    fn truncated_frames_are_corrupt() {
        let mut cell = Vec::new();
        put_length_prefixed(&mut cell, b"hello");
        cell.pop();
        let err = list_elements(&cell).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        let mut bad: &[u8] = &[0xff; 11];
        assert!(get_varint(&mut bad).is_err());
    }
}
