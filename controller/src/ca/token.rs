//! Join tokens, in Docker's form: `SWMTKN-1-<digest>-<secret>`. The digest is the SHA-256 of
//! the root CA certificate (DER), in base 36 padded to 50 characters: a joiner pins the CA by
//! it before trusting anything the manager says. The secret (128 random bits, base 36, 25
//! characters) says which role the joiner gets; managers keep one per role and compare in
//! constant time.

use std::fmt;

use sha2::{Digest, Sha256};

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
const DIGEST_CHARS: usize = 50;
const SECRET_CHARS: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "invalid join token: expected SWMTKN-1-<CA digest>-<secret>, as printed by `swarm join-token`"
    )]
    Malformed,
    #[error("invalid join token: version {0} is not supported (this swarm reads version 1)")]
    Version(String),
    #[error(
        "the manager's CA does not match the join token: the token pins CA digest {expected}, the manager presented {actual}; check the token and the address"
    )]
    CaMismatch { expected: String, actual: String },
}

#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    ca_digest: [u8; 32],
    secret: [u8; 16],
}

impl fmt::Debug for JoinToken {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JoinToken(SWMTKN-1-{}-…)",
            base36(&self.ca_digest, DIGEST_CHARS)
        )
    }
}

impl JoinToken {
    /// A new token for the CA whose certificate is `ca_der`, with a fresh random secret.
    pub fn generate(ca_der: &[u8]) -> JoinToken {
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret).expect("the operating system provides random bytes");
        JoinToken {
            ca_digest: Sha256::digest(ca_der).into(),
            secret,
        }
    }

    pub fn parse(text: &str) -> Result<JoinToken, TokenError> {
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [prefix, version, digest, secret] = parts.as_slice() else {
            return Err(TokenError::Malformed);
        };
        if *prefix != PREFIX {
            return Err(TokenError::Malformed);
        }
        if *version != VERSION {
            return Err(TokenError::Version((*version).to_owned()));
        }
        if digest.len() != DIGEST_CHARS || secret.len() != SECRET_CHARS {
            return Err(TokenError::Malformed);
        }
        Ok(JoinToken {
            ca_digest: from_base36(digest).ok_or(TokenError::Malformed)?,
            secret: from_base36(secret).ok_or(TokenError::Malformed)?,
        })
    }

    /// Checks that `ca_der` is the CA this token pins.
    pub fn verify_ca(&self, ca_der: &[u8]) -> Result<(), TokenError> {
        let actual: [u8; 32] = Sha256::digest(ca_der).into();
        if actual == self.ca_digest {
            Ok(())
        } else {
            Err(TokenError::CaMismatch {
                expected: base36(&self.ca_digest, DIGEST_CHARS),
                actual: base36(&actual, DIGEST_CHARS),
            })
        }
    }

    /// Whether `other` carries the same secret, compared in constant time.
    pub fn secret_matches(&self, other: &JoinToken) -> bool {
        let difference = self
            .secret
            .iter()
            .zip(other.secret.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0 && self.ca_digest == other.ca_digest
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}-{VERSION}-{}-{}",
            base36(&self.ca_digest, DIGEST_CHARS),
            base36(&self.secret, SECRET_CHARS)
        )
    }
}

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A big-endian number in base 36, left-padded with zeros to `width` characters.
fn base36(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|b| *b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 36) as u8;
            remainder = value % 36;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

fn from_base36<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut number = [0u8; N];
    for c in text.bytes() {
        let digit = ALPHABET.iter().position(|a| *a == c.to_ascii_lowercase())? as u32;
        let mut carry = digit;
        for byte in number.iter_mut().rev() {
            let value = u32::from(*byte) * 36 + carry;
            *byte = value as u8;
            carry = value >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_in_dockers_shape() {
        let token = JoinToken::generate(b"a CA certificate");
        let text = token.to_string();
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts[..2], ["SWMTKN", "1"]);
        assert_eq!(parts[2].len(), 50);
        assert_eq!(parts[3].len(), 25);
        assert_eq!(JoinToken::parse(&text).unwrap(), token);
        assert!(
            !format!("{token:?}").contains(parts[3]),
            "Debug hides the secret"
        );
    }

    #[test]
    fn base36_is_exact() {
        assert_eq!(base36(&[0, 35], 3), "00z");
        assert_eq!(base36(&[1, 0], 0), "74");
        assert_eq!(from_base36::<2>("74"), Some([1, 0]));
        let max = [0xffu8; 16];
        assert_eq!(from_base36::<16>(&base36(&max, SECRET_CHARS)), Some(max));
        assert_eq!(from_base36::<1>("zz"), None, "overflow is refused");
    }

    #[test]
    fn the_ca_is_pinned() {
        let token = JoinToken::generate(b"the real CA");
        assert_eq!(token.verify_ca(b"the real CA"), Ok(()));
        let err = token.verify_ca(b"an impostor").unwrap_err().to_string();
        assert!(err.contains("does not match the join token"), "{err}");
    }

    #[test]
    fn secrets_are_compared_whole() {
        let worker = JoinToken::generate(b"ca");
        let manager = JoinToken::generate(b"ca");
        assert!(worker.secret_matches(&JoinToken::parse(&worker.to_string()).unwrap()));
        assert!(!worker.secret_matches(&manager));
    }

    #[test]
    fn malformed_tokens_say_what_is_expected() {
        let good = JoinToken::generate(b"ca").to_string();
        for bad in [
            "",
            "SWMTKN-1-abc",
            "XXXXXX-1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-aaaaaaaaaaaaaaaaaaaaaaaaa",
            &good.replace("SWMTKN-1", "SWMTKN-2"),
            &good[..good.len() - 1],
            &format!("{}!", &good[..good.len() - 1]),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            JoinToken::parse(&good.replace("SWMTKN-1", "SWMTKN-2")),
            Err(TokenError::Version(_))
        ));
    }
}
