//! Kubernetes quantities as numbers: CPU in millicores, memory in MiB (pure).

/// The value of a quantity in its base unit (cores, bytes): `300m` → 0.3, `64Mi` → 67108864,
/// `299994362n` → 0.299994362, `1.5` → 1.5, `1e3` → 1000.
pub fn parse(quantity: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let q = quantity.trim();
    let finite = |v: f64| v.is_finite().then_some(v);
    if let Ok(plain) = q.parse::<f64>() {
        return finite(plain);
    }
    SUFFIXES.iter().find_map(|(suffix, scale)| {
        let number: f64 = q.strip_suffix(suffix)?.parse().ok()?;
        finite(number * scale)
    })
}

pub fn millicores(quantity: &str) -> Option<f64> {
    parse(quantity).map(|cores| cores * 1000.0)
}

pub fn mebibytes(quantity: &str) -> Option<f64> {
    parse(quantity).map(|bytes| bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6 * b.abs().max(1.0))
    }

    #[test]
    fn cpu_quantities_in_millicores() {
        assert!(close(millicores("300m"), 300.0));
        assert!(close(millicores("299994362n"), 299.994362));
        assert!(close(millicores("1500u"), 1.5));
        assert!(close(millicores("2"), 2000.0));
        assert!(close(millicores("0.5"), 500.0));
        assert!(close(millicores("1e-1"), 100.0));
    }

    #[test]
    fn memory_quantities_in_mebibytes() {
        assert!(close(mebibytes("64Mi"), 64.0));
        assert!(close(mebibytes("8192Ki"), 8.0));
        assert!(close(mebibytes("1Gi"), 1024.0));
        assert!(close(mebibytes("1048576"), 1.0));
        assert!(close(mebibytes("1M"), 1e6 / 1048576.0));
        assert!(close(parse("2E"), 2e18));
    }

    #[test]
    fn nonsense_is_none() {
        for bad in ["", "m", "12x", "abc", "1..2Mi", "inf", "NaN"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
