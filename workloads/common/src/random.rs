//! Random strings from the operating system's CSPRNG (through `rand`'s thread-local generator).

use rand::Rng;
use rand::distr::Alphanumeric;

/// `len` characters of `[A-Za-z0-9]`: about 5.95 bits each, so 22 of them hold 128 bits.
pub fn alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_have_the_length_and_alphabet_asked_for_and_differ() {
        let a = alphanumeric(32);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, alphanumeric(32));
        assert_eq!(alphanumeric(0), "");
    }
}
