//! UTF-8 validation of text messages, whole or incrementally across fragments.

/// True if `data` is entirely valid UTF-8 (SIMD accelerated).
#[inline]
pub fn is_valid(data: &[u8]) -> bool {
    simdutf8::basic::from_utf8(data).is_ok()
}

/// Incremental validator for a text message arriving in pieces.
///
/// Each call re-checks only the bytes after the last complete code point, fails as soon as
/// a prefix can no longer become valid UTF-8, and tolerates a code point cut at the end of
/// the bytes seen so far.
///
/// ```
/// use ringman_protocols::ws::Utf8Validator;
/// let msg = "héllo".as_bytes();
/// let mut v = Utf8Validator::default();
/// assert!(v.check(&msg[..2]).is_ok()); // "h" + first byte of "é"
/// assert!(v.check(msg).is_ok());
/// assert!(v.finish(msg).is_ok());
/// assert!(Utf8Validator::default().check(&[0xff]).is_err());
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Validator {
    /// Bytes already known to be complete, valid code points.
    valid: usize,
}

/// The bytes seen so far can never be valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Checks `data`, the whole message so far (earlier calls saw a prefix of it).
    pub fn check(&mut self, data: &[u8]) -> Result<(), InvalidUtf8> {
        let from = self.valid.min(data.len());
        match simdutf8::compat::from_utf8(&data[from..]) {
            Ok(_) => {
                self.valid = data.len();
                Ok(())
            }
            Err(e) => match e.error_len() {
                Some(_) => Err(InvalidUtf8),
                None => {
                    self.valid = from + e.valid_up_to();
                    // At most 3 bytes of a 4-byte code point may be pending, and they are
                    // already known to be a valid prefix.
                    Ok(())
                }
            },
        }
    }

    /// Checks the complete message: a code point cut at the end is now an error too.
    pub fn finish(&mut self, data: &[u8]) -> Result<(), InvalidUtf8> {
        self.check(data)?;
        if self.valid == data.len() {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Forgets the message, ready for the next one.
    pub fn reset(&mut self) {
        self.valid = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_of_valid_text_passes() {
        let s = "aé€𝄞z".repeat(5);
        let b = s.as_bytes();
        for cut in 0..=b.len() {
            let mut v = Utf8Validator::default();
            assert!(v.check(&b[..cut]).is_ok());
            assert!(v.finish(b).is_ok());
        }
    }

    #[test]
    fn fails_fast_on_invalid_prefix() {
        // 0xce 0xba 0xe1 0xbd 0xb9 0xcf 0x83 0xce 0xbc 0xce 0xb5 then invalid 0xf4 0x90 (> U+10FFFF)
        let mut v = Utf8Validator::default();
        assert!(v.check(&[0xce, 0xba, 0xe1, 0xbd]).is_ok());
        assert_eq!(v.check(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xf4, 0x90]), Err(InvalidUtf8));
        // Surrogate half detected before the message ends.
        assert_eq!(Utf8Validator::default().check(&[b'a', 0xed, 0xa0]), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_code_point_at_end_fails_finish() {
        let mut v = Utf8Validator::default();
        assert!(v.check(&[b'a', 0xe2, 0x82]).is_ok());
        assert_eq!(v.finish(&[b'a', 0xe2, 0x82]), Err(InvalidUtf8));
    }
}
