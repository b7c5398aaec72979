//! Kubernetes quantities of bytes (`64Mi`, `1G`, `1.5Gi`, `1e9`), read and written. k8s-openapi
//! keeps a `Quantity` as its string; the API server has already checked the syntax
//! (`isQuantity`), so this reads the forms a volume size takes.

const MI: u64 = 1 << 20;

/// Bytes of a quantity; `None` if it is not one.
pub(crate) fn bytes(quantity: &str) -> Option<u64> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "m" => 1e-3,
        exponent => {
            let e: i32 = exponent.strip_prefix(['e', 'E'])?.parse().ok()?;
            10f64.powi(e)
        }
    };
    let value = (number * factor).ceil();
    // Fits in u64 (checked first), so the cast neither wraps nor saturates.
    (value.is_finite() && value >= 0.0 && value < u64::MAX as f64).then_some(value as u64)
}

/// A quantity of at least `bytes`, in whole mebibytes (`96Mi`): what a person would write, and
/// what storage backends round to anyway.
pub(crate) fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(MI))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_a_volume_size_takes() {
        assert_eq!(bytes("64Mi"), Some(64 * MI));
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("2G"), Some(2_000_000_000));
        assert_eq!(bytes("1e9"), Some(1_000_000_000));
        assert_eq!(bytes("123"), Some(123));
        assert_eq!(bytes("500k"), Some(500_000));
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        for bad in ["", "Mi", "ten", "1Xi", "-1Gi", "1e999"] {
            assert_eq!(bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn writes_whole_mebibytes_rounding_up() {
        assert_eq!(mebibytes(96 * MI), "96Mi");
        assert_eq!(mebibytes(96 * MI + 1), "97Mi");
        assert!(bytes(&mebibytes(12_345_678)).unwrap() >= 12_345_678);
    }
}
