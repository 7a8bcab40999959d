//! The traffic history (R6–R9): every flow the datapath saw, allowed or denied.
//!
//! Records arrive from the kernel's ring buffer (`recorder`), are appended to a
//! checksummed write-ahead log (`wal`), and are sealed every hour into an Apache Parquet
//! segment (`segment`) entered in a SHA-256 chained manifest (`manifest`). `query` reads
//! them back, pruning by time and column statistics.

pub mod ipfix;
pub mod manifest;
pub mod query;
pub mod record;
pub mod recorder;
pub mod segment;
pub mod service;
pub mod store;
pub mod wal;
pub mod whatif;

pub use record::{Close, Event, Record, Verdict};
