//! A small deterministic PRNG (SplitMix64). The driver seeds it; tests pass
//! a seed. Not for cryptography: it spreads retries and names sessions.

/// SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` (Lemire's multiply-shift; the bias is below 2^-32
    /// for the ranges used here).
    pub fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        ((u128::from(self.next_u64()) * u128::from(max + 1)) >> 64) as u64
    }

    /// 16 random bytes, never all zero.
    pub fn bytes16(&mut self) -> [u8; 16] {
        loop {
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&self.next_u64().to_le_bytes());
            out[8..].copy_from_slice(&self.next_u64().to_le_bytes());
            if out != [0; 16] {
                return out;
            }
        }
    }
}
