//! The repository's public `config` object (plain JSON, readable without
//! the key): the format version, the repository id and the parameters every
//! writer must use.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::format::chunker::ChunkerParams;
use crate::format::id::Id;

/// The only format version this build reads and writes.
pub const VERSION: u32 = 1;

/// The public repository config (`config`, plain JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    pub id: Id,
    pub chunker: ChunkerParams,
    pub compression_level: i32,
    /// Target size of data packs in bytes.
    pub pack_size: u32,
    pub created: Timestamp,
}

impl Config {
    /// Range-check the parameters a writer takes from the config, so a
    /// hand-edited or planted config cannot make backups leak chunk sizes
    /// (a tiny pack size) or exhaust memory (a huge one).
    pub fn validate(&self) -> Result<(), String> {
        self.chunker.validate().map_err(|e| e.to_string())?;
        check_compression_level(self.compression_level)?;
        check_pack_size(self.pack_size)
    }
}

pub fn check_compression_level(level: i32) -> Result<(), String> {
    if (0..=22).contains(&level) {
        Ok(())
    } else {
        Err(format!("compression level {level} is not in 0..=22"))
    }
}

pub fn check_pack_size(size: u32) -> Result<(), String> {
    if (1 << 20..=1 << 30).contains(&size) {
        Ok(())
    } else {
        Err(format!("pack size {size} is not in 1 MiB..=1 GiB"))
    }
}
