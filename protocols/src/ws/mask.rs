//! Payload masking (RFC 6455 §5.3), applied in place a machine word at a time.

/// XORs `buf` in place with the 4-byte masking `key`, as if `buf` started `offset` bytes into
/// the masked payload (so a payload may be unmasked in pieces).
///
/// Masking and unmasking are the same operation. The bulk of the buffer is processed eight
/// bytes at a time with the key rotated to the right phase and widened to a `u64`; only the
/// last `len % 8` bytes are handled one by one.
///
/// ```
/// use ringman_protocols::ws::apply_mask;
/// let mut data = *b"Hello";
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
/// assert_eq!(&data, b"Hello");
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // The key as seen from buf[0].
    let k = key_at(key, offset);
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        // `try_into` on an 8-byte chunk cannot fail; the compiler emits one unaligned load.
        let v = u64::from_ne_bytes((&*w).try_into().unwrap_or([0; 8])) ^ wide;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    // Eight is a multiple of four, so the tail starts at key phase 0 again.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

/// The key rotated so that index 0 applies to payload byte `offset`.
#[inline]
fn key_at(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut k = key;
    k.rotate_left(offset & 3);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_naive_for_all_alignments_and_lengths() {
        let key = [0x12, 0x9a, 0xf0, 0x5c];
        let backing: Vec<u8> = (0..400u32).map(|i| (i.wrapping_mul(31) ^ (i >> 3)) as u8).collect();
        for align in 0..8 {
            for len in 0..300 {
                for offset in 0..4 {
                    let mut a = backing.clone();
                    let mut b = backing.clone();
                    apply_mask(&mut a[align..align + len], key, offset);
                    naive(&mut b[align..align + len], key, offset);
                    assert_eq!(a, b, "align {align} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn unmasking_in_pieces_equals_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = data.clone();
        let (a, b) = pieces.split_at_mut(13);
        apply_mask(a, key, 0);
        apply_mask(b, key, 13);
        assert_eq!(whole, pieces);
    }
}
