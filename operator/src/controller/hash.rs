//! Every hash the controller takes, in two kinds that must not be mixed up:
//!
//! - **Content hashes** ([`content_hash`]) are written into objects (the applied-hash and
//!   config-hash annotations), so they are stable across Rust releases (std's `DefaultHasher`
//!   is not guaranteed to be): pods roll and objects are re-applied only when their content
//!   changes, also after the operator is upgraded.
//! - **In-memory hashes** ([`hash_of`]) only key or compare what one process holds (the write
//!   memo's keys, the watch filter's fingerprints), so std's fast hasher serves.

use std::hash::{DefaultHasher, Hash, Hasher};

use fnv::FnvHasher;

/// FNV-1a (64 bit) over the parts, each ended by a NUL byte so that `["ab", "c"]` and
/// `["a", "bc"]` differ; 16 hex digits.
pub(crate) fn content_hash<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    hex(content_hash_value(parts))
}

/// The number behind `content_hash`, for memory that only compares it.
pub(crate) fn content_hash_value<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut hasher = FnvHasher::default();
    for part in parts {
        hasher.write(part.as_bytes());
        hasher.write_u8(0);
    }
    hasher.finish()
}

/// How a content hash is written in annotations: 16 hex digits.
pub(crate) fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// An in-memory hash of `value`: never written anywhere, so it may change between releases.
pub(crate) fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_of_a_content_never_changes() {
        // Pinned: a different value would re-apply every child and roll every pod on upgrade.
        assert_eq!(content_hash(["a"]), "089be207b544f1e4");
        assert_eq!(content_hash([]), "cbf29ce484222325");
    }

    #[test]
    fn part_boundaries_count() {
        assert_ne!(content_hash(["ab", "c"]), content_hash(["a", "bc"]));
    }
}
