//! The traffic history (R6–R9): every flow the datapath saw, allowed or denied.
//!
//! Records arrive from the kernel's ring buffer (`recorder`), are appended to a
//! checksummed write-ahead log (`wal`), and are sealed every hour into an Apache Parquet
//! segment (`segment`) entered in a SHA-256 chained manifest (`manifest`). `query` reads
//! them back, pruning by time and column statistics.

pub mod ipfix;
pub mod manifest;
mod merge;
pub mod query;
pub mod record;
pub mod recorder;
pub mod segment;
pub mod service;
pub mod store;
pub mod wal;
pub mod whatif;

pub use record::{Close, Event, Record, Verdict};

/// A `Hasher` for short keys (names, addresses, numbers) in tables whose keys do not come
/// from the network: files sekisho wrote, the configuration. (Looking up an address from a
/// packet in a table built from the configuration is fine: lookups add no entries.)
#[derive(Clone, Copy, Default)]
pub struct FastHash(u64);

impl std::hash::Hasher for FastHash {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    /// The multiply leaves the low bits weak (an aligned pointer's are all zero), and the
    /// table picks buckets by the low bits: rotate the strong high bits down.
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FastHash>>;
