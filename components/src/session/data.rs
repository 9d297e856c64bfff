//! The stored form of a session's data, the same for every handler.
//!
//! Version 1: one byte `0x01`, then each entry in key order as
//! `key length (u32, big endian) | key (UTF-8) | value length (u32, big endian) | value`.
//! An empty session is the single byte `0x01`. Anything else (another version, a length
//! running past the end, a key that is not UTF-8, a repeated key) is refused as a whole.

use std::collections::BTreeMap;

/// The format version written by [`encode`].
pub(crate) const VERSION: u8 = 1;

/// A session's entries.
pub(crate) type Data = BTreeMap<String, Vec<u8>>;

/// Encodes `data` in version 1.
pub(crate) fn encode(data: &Data) -> Vec<u8> {
    let len = 1 + data.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(VERSION);
    for (k, v) in data {
        for field in [k.as_bytes(), &v[..]] {
            // Values over 4 GiB cannot be stored (and would not be sensible in a session).
            out.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(field);
        }
    }
    out
}

/// Decodes what [`encode`] wrote; `None` for anything malformed.
pub(crate) fn decode(bytes: &[u8]) -> Option<Data> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let field = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if tail.len() < len {
            return None;
        }
        let (f, tail) = tail.split_at(len);
        *rest = tail;
        Some(f.to_vec())
    };
    let mut data = Data::new();
    while !rest.is_empty() {
        let key = String::from_utf8(field(&mut rest)?).ok()?;
        let value = field(&mut rest)?;
        if data.insert(key, value).is_some() {
            return None;
        }
    }
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_data_round_trips_and_has_the_documented_layout() {
        let mut d = Data::new();
        assert_eq!(encode(&d), [1]);
        assert_eq!(decode(&[1]).unwrap(), d);
        d.insert("visits".into(), b"3".to_vec());
        d.insert("a".into(), vec![0, 255, b'\n']);
        let e = encode(&d);
        assert_eq!(e, b"\x01\0\0\0\x01a\0\0\0\x03\0\xff\n\0\0\0\x06visits\0\0\0\x013");
        assert_eq!(decode(&e).unwrap(), d);
        d.insert(String::new(), Vec::new());
        assert_eq!(decode(&encode(&d)).unwrap(), d);
    }

    #[test]
    fn session_data_refuses_malformed_input() {
        let good = b"\x01\0\0\0\x01a\0\0\0\x01b";
        assert!(decode(good).is_some());
        for bad in [
            &b""[..],
            b"\x02",
            b"\x02\0\0\0\x01a\0\0\0\x01b",
            b"\x01\0\0\0\x01a\0\0\0\x02b",
            b"\x01\0\0\0\x01a",
            b"\x01\0\0\0",
            b"\x01\0\0\0\x01\xff\0\0\0\x01b",
            b"\x01\0\0\0\x01a\0\0\0\x01b\0\0\0\x01a\0\0\0\x01c",
            b"\x01\xff\xff\xff\xff",
        ] {
            assert!(decode(bad).is_none(), "{bad:?} accepted");
        }
    }
}
