//! A cheap hash for the engine's map of commands in flight.
//!
//! Keys are cookies, handed out 1, 2, 3 ... by the core, never chosen by the
//! server, so there is nothing to defend against with a keyed hash: std's
//! SipHash cost a few percent of the client's user-space instructions under
//! 64 KiB writes at QD16 (a lookup per write payload on every send). A
//! multiplication by an odd constant spreads consecutive cookies over both
//! the low bits (bucket) and the high bits (hashbrown's tag).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// `HashMap` keyed by cookie with [`CookieHasher`].
pub(crate) type CookieHashMap<V> = HashMap<u64, V, BuildHasherDefault<CookieHasher>>;

/// Hashes one `u64` by multiplying it with 2^64 / φ.
#[derive(Default, Clone, Copy)]
pub(crate) struct CookieHasher(u64);

impl Hasher for CookieHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; kept correct for any other key.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::CookieHashMap;

    #[test]
    fn works_as_a_map() {
        let mut m = CookieHashMap::default();
        for c in 1..=1000u64 {
            m.insert(c, c * 2);
        }
        for c in (1..=1000u64).step_by(2) {
            assert_eq!(m.remove(&c), Some(c * 2));
        }
        assert_eq!(m.len(), 500);
        assert_eq!(m.get(&2), Some(&4));
        assert!(!m.contains_key(&3));
    }
}
