//! A fast hasher for maps keyed by what the run itself produces: the report's and the
//! timeline's (the log's and timeline's contents), and the supervisor's threads.

/// The report's and the timeline's hasher: a multiply-rotate hash (as rustc's FxHash),
/// several times faster than the default SipHash on the million keys of a large run (grouping
/// keys; pids, threads and test names looked up once per call). The keys come from the run's
/// own log and timeline, so hash flooding is not a concern.
pub type Fast = std::hash::BuildHasherDefault<FastHasher>;

#[derive(Default)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The multiplications leave the low bits (the table's bucket) poorly mixed: fold the
        // high bits in (splitmix64's finaliser).
        let mut h = self.0;
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// A map with the fast hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, Fast>;
/// A set with the fast hasher.
pub type FastSet<T> = std::collections::HashSet<T, Fast>;
