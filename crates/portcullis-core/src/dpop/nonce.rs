//! Server nonces (RFC 9449 §8) that need no shared state beyond a configured secret: a nonce is the
//! time window it was issued in and an HMAC-SHA256 of that window under the secret, so every replica
//! with the same secret accepts every other replica's nonces. A nonce is good in its own window and the
//! next one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Issues and checks nonces.
pub struct Nonces {
    /// HMAC-SHA256 keyed with the secret, cloned for each tag.
    key: Hmac<Sha256>,
    window: i64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

// === impl Nonces ===

impl Nonces {
    /// `window` in seconds (at least 1).
    pub fn new(secret: &[u8], window: i64) -> Nonces {
        Nonces {
            // HMAC takes a key of any length (RFC 2104 §3); the build requires 32 bytes or more.
            key: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length"),
            window: window.max(1),
        }
    }

    /// A nonce for now.
    pub fn issue(&self, now: i64) -> String {
        self.for_window(now.div_euclid(self.window))
    }

    fn for_window(&self, window: i64) -> String {
        let index = window.to_be_bytes();
        let tag = self.tag(&index);
        let mut raw = [0u8; 24];
        raw[..8].copy_from_slice(&index);
        raw[8..].copy_from_slice(&tag[..16]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// True for a nonce issued (by any replica with this secret) in this window or the previous one.
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 24 {
            return false;
        }
        let window = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let current = now.div_euclid(self.window);
        if window != current && window != current - 1 {
            return false;
        }
        let tag = self.tag(&raw[..8]);
        constant_time_eq(&tag[..16], &raw[8..])
    }

    fn tag(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.key.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_share_nonces_through_the_secret_only() {
        let a = Nonces::new(b"0123456789abcdef0123456789abcdef", 300);
        let b = Nonces::new(b"0123456789abcdef0123456789abcdef", 300);
        let other = Nonces::new(b"another secret, another cluster!", 300);
        let nonce = a.issue(1_000);
        assert!(b.accepts(&nonce, 1_000));
        assert!(b.accepts(&nonce, 1_250), "the next window still takes it");
        assert!(!b.accepts(&nonce, 1_500), "two windows later it is stale");
        assert!(!other.accepts(&nonce, 1_000));
        assert!(!b.accepts("garbage", 1_000));
        let mut forged = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        forged[23] ^= 1;
        assert!(!b.accepts(&URL_SAFE_NO_PAD.encode(forged), 1_000));
    }
}
