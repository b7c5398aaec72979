//! Whether to grow the data volume, and to what: a pure decision from the forecast, the claim
//! and its StorageClass. The claim asks for half as much again, at most `autoGrow.maxSize`, and
//! only once the volume has what it asked for last time (a resize in progress is waited for).

use super::quantity;

/// What the claim and its class say.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Claim {
    /// `spec.resources.requests.storage`.
    pub(crate) request_bytes: u64,
    /// `status.capacity.storage`: what the volume has.
    pub(crate) capacity_bytes: u64,
    pub(crate) class: Option<String>,
}

/// The StorageClass's `allowVolumeExpansion`, as far as the operator could read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Expansion {
    Allowed,
    NotAllowed,
    /// Not readable (a namespaced install may not read StorageClasses): the patch is tried and
    /// the API server's admission answers.
    Unknown,
}

/// What autoGrow does about a volume expected to fill soon.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Grow {
    /// Ask for this much: a quantity, and its bytes.
    To { quantity: String, bytes: u64 },
    /// The claim asks for more than the volume has: the storage backend is resizing it.
    Resizing,
    /// It cannot grow: a CamelCase reason and what to do.
    Cannot {
        reason: &'static str,
        message: String,
    },
}

/// Half as much again each time: a few steps reach any `maxSize`, and no step is so large that
/// a wrong forecast costs much.
const STEP: f64 = 1.5;

pub(crate) fn decide(claim: &Claim, expansion: Expansion, max_size: &str) -> Grow {
    if claim.request_bytes > claim.capacity_bytes {
        return Grow::Resizing;
    }
    let Some(max) = quantity::bytes(max_size) else {
        return Grow::Cannot {
            reason: "InvalidMaxSize",
            message: format!("autoGrow.maxSize {max_size:?} is not a quantity"),
        };
    };
    if expansion == Expansion::NotAllowed {
        let class = claim.class.as_deref().unwrap_or("(none)");
        return Grow::Cannot {
            reason: "ExpansionNotAllowed",
            message: format!(
                "StorageClass {class} does not allow volume expansion (allowVolumeExpansion is not true): grow by hand onto a class that does, shorten the retention or add downsampling"
            ),
        };
    }
    if claim.request_bytes >= max {
        return Grow::Cannot {
            reason: "AtMaxSize",
            message: format!(
                "the volume is at autoGrow.maxSize {max_size}: raise it, shorten the retention or add downsampling"
            ),
        };
    }
    let wanted = (claim.request_bytes as f64 * STEP).ceil() as u64;
    if wanted >= max {
        return Grow::To {
            quantity: max_size.to_owned(),
            bytes: max,
        };
    }
    let quantity = quantity::mebibytes(wanted);
    let bytes = quantity::bytes(&quantity).unwrap_or(wanted);
    Grow::To { quantity, bytes }
}

/// The size the claim is applied with: the spec's, or what it already asks for when that is
/// more (grown by autoGrow or by hand). A claim never asks for less: the API server refuses it.
pub(crate) fn kept_size(spec_size: &str, current_request: Option<&str>) -> String {
    match (
        current_request,
        current_request.and_then(quantity::bytes),
        quantity::bytes(spec_size),
    ) {
        (Some(current), Some(current_bytes), Some(spec_bytes)) if current_bytes > spec_bytes => {
            current.to_owned()
        }
        _ => spec_size.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    fn claim(request_mi: u64, capacity_mi: u64) -> Claim {
        Claim {
            request_bytes: request_mi * MI,
            capacity_bytes: capacity_mi * MI,
            class: Some("fast".into()),
        }
    }

    #[test]
    fn grows_by_half_in_whole_mebibytes() {
        assert_eq!(
            decide(&claim(64, 64), Expansion::Allowed, "1Gi"),
            Grow::To {
                quantity: "96Mi".into(),
                bytes: 96 * MI
            }
        );
        // The class could not be read: tried all the same.
        assert!(matches!(
            decide(&claim(64, 64), Expansion::Unknown, "1Gi"),
            Grow::To { .. }
        ));
    }

    #[test]
    fn never_past_max_size() {
        assert_eq!(
            decide(&claim(64, 64), Expansion::Allowed, "80Mi"),
            Grow::To {
                quantity: "80Mi".into(),
                bytes: 80 * MI
            }
        );
        let Grow::Cannot { reason, message } = decide(&claim(80, 80), Expansion::Allowed, "80Mi")
        else {
            panic!()
        };
        assert_eq!(reason, "AtMaxSize");
        assert!(message.contains("80Mi"), "{message}");
    }

    #[test]
    fn a_class_without_expansion_says_so() {
        let Grow::Cannot { reason, message } = decide(&claim(64, 64), Expansion::NotAllowed, "1Gi")
        else {
            panic!()
        };
        assert_eq!(reason, "ExpansionNotAllowed");
        assert!(message.contains("StorageClass fast"), "{message}");
    }

    #[test]
    fn a_resize_in_progress_is_waited_for() {
        assert_eq!(
            decide(&claim(96, 64), Expansion::Allowed, "1Gi"),
            Grow::Resizing
        );
    }

    #[test]
    fn the_claim_keeps_the_larger_of_spec_and_request() {
        assert_eq!(kept_size("64Mi", Some("96Mi")), "96Mi");
        assert_eq!(kept_size("1Gi", Some("96Mi")), "1Gi");
        assert_eq!(kept_size("64Mi", None), "64Mi");
        assert_eq!(kept_size("64Mi", Some("nonsense")), "64Mi");
    }
}
