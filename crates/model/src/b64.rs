//! Standard base64 (padded), the encoding of 3.5 entries' `hashedPassword`.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Go's `base64.StdEncoding`: padding required, trailing bits not checked.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Encodes with padding (Go's `base64.StdEncoding.EncodeToString`).
pub(crate) fn encode(data: &[u8]) -> String {
    GO_STD.encode(data)
}

/// Decodes like Go's `base64.StdEncoding.DecodeString` (CR/LF ignored,
/// padding required, trailing bits not checked); `None` on malformed input.
pub(crate) fn decode(s: &str) -> Option<Vec<u8>> {
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'\r' && c != b'\n').collect();
    GO_STD.decode(clean).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            b"$2a$10$xyz",
        ] {
            let e = encode(s);
            assert_eq!(decode(&e).as_deref(), Some(s), "{e}");
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8=");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode("Zm8"), None);
        assert_eq!(decode("Z==="), None);
        assert_eq!(decode("Zm8=Zm8="), None);
        assert_eq!(decode("Zm*="), None);
        assert_eq!(decode("Zm\n8="), Some(b"fo".to_vec()));
    }
}
