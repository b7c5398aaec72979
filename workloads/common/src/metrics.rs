//! One declaration per set of Prometheus metrics: [`metric_set!`] writes the struct, its
//! `Default` and its registration from the fields, and each metric's help text is the field's
//! doc comment. The name, help and metric of a field are said once, where the field is.

pub use prometheus_client::registry::{Metric, Registry, Unit};

/// Declares a struct of prometheus-client metrics registered under one prefix.
///
/// Each field needs a doc comment, which becomes the metric's help text. The metric is named
/// after the field unless `#[metric("name")]` (or `#[metric("name", Unit)]`, a
/// [`Unit`] variant) says otherwise. A field is made with `Default::default()` unless
/// `= expression` follows its type (histograms, for their buckets).
///
/// ```
/// use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
///
/// iot_common::metric_set! {
///     #[derive(Clone, Debug)]
///     pub struct Example in "example" {
///         /// Requests answered
///         pub answered: Counter,
///         /// Time to answer one request
///         #[metric("answer", Seconds)]
///         pub latency: Histogram = Histogram::new([0.001, 0.01, 0.1]),
///     }
/// }
///
/// let mut registry = prometheus_client::registry::Registry::default();
/// let metrics = Example::default();
/// metrics.register_in(&mut registry);
/// metrics.answered.inc();
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("# HELP example_answered Requests answered."));
/// assert!(text.contains("example_answer_seconds_count 0"));
/// ```
#[macro_export]
macro_rules! metric_set {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident in $prefix:literal {
            $(
                $(#[doc = $help:literal])+
                $(#[metric($metric:literal $(, $unit:ident)?)])?
                $fvis:vis $field:ident : $ty:ty $(= $init:expr)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[doc = $help])+ $fvis $field: $ty, )*
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                Self {
                    $( $field: $crate::__first!($($init,)? ::std::default::Default::default()), )*
                }
            }
        }

        impl $name {
            /// Registers every metric of the set under its prefix, each with its doc comment
            /// as help text.
            $vis fn register_in(&self, registry: &mut $crate::metrics::Registry) {
                let registry = registry.sub_registry_with_prefix($prefix);
                $(
                    $crate::metrics::register(
                        registry,
                        $crate::__first!($($metric,)? stringify!($field)),
                        concat!($($help, " "),+),
                        $crate::__first!($($(Some($crate::metrics::Unit::$unit),)?)? None),
                        self.$field.clone(),
                    );
                )*
            }
        }
    };
}

/// The first of its arguments: how [`metric_set!`] picks an optional part or its default.
#[doc(hidden)]
#[macro_export]
macro_rules! __first {
    ($first:expr $(, $rest:expr)* $(,)?) => {
        $first
    };
}

/// Registers one metric; `help` is a doc comment, so its lines' spacing is folded to single
/// spaces (the library adds the closing full stop itself).
pub fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: impl Metric,
) {
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let help = help.strip_suffix('.').unwrap_or(&help);
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric),
        None => registry.register(name, help, metric),
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    crate::metric_set! {
        struct Sample in "sample" {
            /// Things counted,
            /// over two lines.
            counted: Counter,
            /// Bytes held
            #[metric("held", Bytes)]
            held_now: Gauge,
            /// Renamed
            #[metric("other_name")]
            renamed: Counter = Counter::default(),
        }
    }

    fn exposition() -> String {
        let mut registry = Registry::default();
        let sample = Sample::default();
        sample.register_in(&mut registry);
        sample.counted.inc_by(3);
        sample.held_now.set(7);
        sample.renamed.inc();
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        text
    }

    use super::*;

    #[test]
    fn a_doc_comment_over_several_lines_is_one_help_line() {
        let text = exposition();
        assert!(
            text.contains("# HELP sample_counted Things counted, over two lines.\n"),
            "{text}"
        );
        assert!(text.contains("sample_counted_total 3\n"), "{text}");
    }

    #[test]
    fn a_unit_and_a_name_override_reach_the_exposition() {
        let text = exposition();
        assert!(text.contains("# UNIT sample_held_bytes bytes\n"), "{text}");
        assert!(text.contains("sample_held_bytes 7\n"), "{text}");
        assert!(text.contains("sample_other_name_total 1\n"), "{text}");
        assert!(!text.contains("renamed"), "{text}");
    }
}
