//! The timeline as a picture, PNG and SVG: CPU of each pod of the load-tested component with
//! the scale-out and scale-in thresholds, its HPA's replicas as steps, and the load. What is
//! drawn is computed from the rows first ([`data`]: [`PlotData::from_rows`], pure); drawing is
//! plotters.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

mod data;

pub use self::data::{PlotData, step_points};

/// DejaVu Sans cut down to ASCII and a few symbols (font/LICENSE): text needs no system fonts.
const FONT: &[u8] = include_bytes!("font/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// The picture's width in pixels (the SVG's in user units).
pub const WIDTH: u32 = 1400;
/// The picture's height.
pub const HEIGHT: u32 = 1000;

/// A picture that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What plotters said.
    pub message: String,
}

/// Which HPA and pods to draw, and the thresholds to mark.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSpec {
    /// Above the three panels.
    pub title: String,
    /// `grafana` or `coap-server`: the component label and HPA columns to draw.
    pub component: String,
    /// The HPA's CPU target, drawn red; `None` without autoscaling.
    pub scale_out_pct: Option<f64>,
    /// `scaleIn.cpuPercent`, drawn grey.
    pub scale_in_pct: Option<f64>,
    /// `maxReplicas`, dashed on the replicas panel.
    pub max_replicas: Option<i32>,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is a constant in the binary; a test renders with it.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            tracing::warn!("the embedded font is unreadable; the plot will have no text");
        }
    });
}

/// Writes `stem.png` and `stem.svg`.
pub fn render(data: &PlotData, spec: &PlotSpec, png: &Path, svg: &Path) -> Result<(), PlotError> {
    register_font();
    let fail = |path: &Path| {
        let path = path.display().to_string();
        move |e: String| PlotError {
            path: path.clone(),
            message: e,
        }
    };
    {
        let root = BitMapBackend::new(png, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, data, spec).map_err(fail(png))?;
        root.present().map_err(|e| fail(png)(e.to_string()))?;
    }
    {
        let root = SVGBackend::new(svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, data, spec).map_err(fail(svg))?;
        root.present().map_err(|e| fail(svg)(e.to_string()))?;
    }
    Ok(())
}

/// Colours that stay apart on white (and for the common colour-vision deficiencies).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0xbc, 0xbd, 0x22),
];
const RED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const GREY: RGBColor = RGBColor(0x55, 0x55, 0x55);

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &PlotData,
    spec: &PlotSpec,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(&spec.title, (FAMILY, 28)).map_err(e)?;
    let (top, rest) = root.split_vertically(HEIGHT as i32 * 44 / 100);
    let (middle, bottom) = rest.split_vertically(HEIGHT as i32 * 26 / 100);
    let x_end = data.end_s.max(1.0);

    // CPU of each pod, with the thresholds.
    let cpu_max = data
        .cpu
        .values()
        .flatten()
        .map(|p| p.1)
        .chain([spec.scale_out_pct.unwrap_or(0.0)])
        .fold(1.0, f64::max);
    let thresholds = if data.cpu_is_percent {
        usize::from(spec.scale_out_pct.is_some()) + usize::from(spec.scale_in_pct.is_some())
    } else {
        0
    };
    let cpu_max = above_legend(cpu_max, data.cpu.len() + thresholds, HEIGHT * 44 / 100);
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..cpu_max)
        .map_err(e)?;
    let unit = if data.cpu_is_percent {
        "CPU, % of request"
    } else {
        "CPU, millicores"
    };
    axes(&mut chart, unit, None, None).map_err(e)?;
    for (i, (pod, points)) in data.cpu.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        labelled_line(
            &mut chart,
            points.iter().copied(),
            colour.stroke_width(2),
            false,
            short_pod_name(pod),
        )
        .map_err(e)?;
    }
    if data.cpu_is_percent {
        for (pct, text) in [
            (spec.scale_out_pct, "scale out above"),
            (spec.scale_in_pct, "scale in below"),
        ] {
            let Some(pct) = pct else { continue };
            let colour = if text.starts_with("scale out") {
                RED
            } else {
                GREY
            };
            labelled_line(
                &mut chart,
                [(0.0, pct), (x_end, pct)],
                colour.stroke_width(2),
                true,
                format!("{text} {pct:.0} %"),
            )
            .map_err(e)?;
        }
    }
    legend(&mut chart).map_err(e)?;

    // Replicas.
    let replicas_max = data
        .desired
        .iter()
        .chain(&data.current)
        .map(|p| p.1)
        .chain(spec.max_replicas.map(f64::from))
        .fold(1.0, f64::max);
    let entries = 2 + usize::from(spec.max_replicas.is_some());
    let replicas_max =
        above_legend(replicas_max, entries, HEIGHT * 26 / 100).max(replicas_max + 0.5);
    let mut chart = ChartBuilder::on(&middle)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..replicas_max)
        .map_err(e)?;
    let y_desc = format!("{} replicas", spec.component);
    axes(&mut chart, &y_desc, None, Some(replicas_max as usize + 1)).map_err(e)?;
    if let Some(max) = spec.max_replicas {
        let max = f64::from(max);
        labelled_line(
            &mut chart,
            [(0.0, max), (x_end, max)],
            GREY.stroke_width(1),
            true,
            "maxReplicas",
        )
        .map_err(e)?;
    }
    let desired = PALETTE[1].stroke_width(2);
    labelled_line(
        &mut chart,
        data.desired.iter().copied(),
        desired,
        false,
        "desired (HPA)",
    )
    .map_err(e)?;
    let current = BLACK.stroke_width(3);
    labelled_line(
        &mut chart,
        data.current.iter().copied(),
        current,
        false,
        "current",
    )
    .map_err(e)?;
    legend(&mut chart).map_err(e)?;

    // Load.
    let sent_any = data
        .acked_per_s
        .iter()
        .chain(&data.failed_per_s)
        .any(|p| p.1 > 0.0);
    let load_max = data
        .acked_per_s
        .iter()
        .chain(&data.failed_per_s)
        .map(|p| p.1)
        .fold(5.0, f64::max);
    let load_max = above_legend(load_max, 2, HEIGHT * 30 / 100);
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..load_max)
        .map_err(e)?;
    let x_desc = "seconds since the start of the load test";
    axes(&mut chart, "requests/s", Some(x_desc), None).map_err(e)?;
    if !sent_any {
        chart
            .draw_series([Text::new(
                "no load recorded in this run",
                (x_end * 0.4, load_max * 0.55),
                (FAMILY, 20).into_font().color(&GREY),
            )])
            .map_err(e)?;
        return Ok(());
    }
    let acked = PALETTE[2].stroke_width(2);
    labelled_line(
        &mut chart,
        data.acked_per_s.iter().copied(),
        acked,
        false,
        "acknowledged/s",
    )
    .map_err(e)?;
    let failed = RED.stroke_width(2);
    labelled_line(
        &mut chart,
        data.failed_per_s.iter().copied(),
        failed,
        false,
        "failed/s",
    )
    .map_err(e)?;
    legend(&mut chart).map_err(e)?;
    Ok(())
}

/// The top of a y axis that leaves the upper band of the panel to the legend, so the legend
/// (upper right) never hides data: each entry is about 18 px high, plus the box and margins.
fn above_legend(data_max: f64, entries: usize, panel_px: u32) -> f64 {
    let legend_px = 18.0 * entries as f64 + 40.0;
    let plot_px = f64::from(panel_px) - 50.0;
    let free = (1.0 - legend_px / plot_px).clamp(0.3, 0.9);
    data_max / free
}

fn whole(v: &f64) -> String {
    format!("{v:.0}")
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel's axes: whole-number labels, no minor grid lines; the x description only on the
/// bottom panel, and a fixed number of y labels where the values are counts.
fn axes<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    y_desc: &str,
    x_desc: Option<&str>,
    y_labels: Option<usize>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let label = (FAMILY, 16);
    let mut mesh = chart.configure_mesh();
    mesh.y_desc(y_desc)
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .label_style(label)
        .axis_desc_style(label)
        .light_line_style(WHITE.mix(0.0));
    if let Some(x_desc) = x_desc {
        mesh.x_desc(x_desc);
    }
    if let Some(n) = y_labels {
        mesh.y_labels(n);
    }
    mesh.draw()
}

fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()
}

/// A labelled series, solid or dashed; its legend entry is a short stroke of the same style.
fn labelled_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: impl IntoIterator<Item = (f64, f64)>,
    style: ShapeStyle,
    dashed: bool,
    label: impl Into<String>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let points: Vec<(f64, f64)> = points.into_iter().collect();
    let series = if dashed {
        chart.draw_series(DashedLineSeries::new(points, 10, 6, style))?
    } else {
        chart.draw_series(LineSeries::new(points, style))?
    };
    series
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    Ok(())
}

/// `lab-coap-server-6d5f7c9b8-x2x7q` → `…-x2x7q`: the ReplicaSet hash says nothing to a reader.
fn short_pod_name(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((_, tail)) if name.len() > 24 => format!("pod …-{tail}"),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{HpaReplicas, PodSample, Row};

    /// Synthetic run: three pods of a component scaling 1 → 3 → 1 under a load that rises and falls.
    pub fn synthetic_rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for t in 0..240u64 {
            let replicas = match t {
                0..60 => 1,
                60..90 => 2,
                90..180 => 3,
                180..210 => 2,
                _ => 1,
            };
            let load = if (20..160).contains(&t) { 300.0 } else { 20.0 };
            for i in 0..replicas {
                rows.push(Row {
                    time: format!("t{t}"),
                    elapsed_s: t as f64,
                    coap_server: HpaReplicas {
                        desired: Some(replicas + i32::from((55..60).contains(&t))),
                        current: Some(replicas),
                    },
                    pod: Some(PodSample {
                        name: format!("lab-coap-server-6d5f7c9b8-pod{i}"),
                        component: "coap-server".into(),
                        state: "Ready".into(),
                        cpu_m: Some(load / f64::from(replicas) / 5.0 + f64::from(i)),
                        cpu_request_m: Some(50.0),
                        memory_mib: Some(10.0),
                    }),
                    acked: t * 100,
                    failed: t / 50,
                    ..Row::default()
                });
            }
        }
        rows
    }

    pub fn spec() -> PlotSpec {
        PlotSpec {
            title: "loadtest lab: coap-server".into(),
            component: "coap-server".into(),
            scale_out_pct: Some(60.0),
            scale_in_pct: Some(42.0),
            max_replicas: Some(5),
        }
    }

    #[test]
    fn renders_a_png_and_an_svg_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let (png, svg) = (dir.path().join("t.png"), dir.path().join("t.svg"));
        let data = PlotData::from_rows(&synthetic_rows(), "coap-server");
        render(&data, &spec(), &png, &svg).unwrap();
        let png_bytes = std::fs::read(&png).unwrap();
        assert!(png_bytes.starts_with(b"\x89PNG"), "not a PNG");
        assert!(
            png_bytes.len() > 20_000,
            "{} bytes: nearly empty",
            png_bytes.len()
        );
        let svg_text = std::fs::read_to_string(&svg).unwrap();
        for needle in [
            "<svg",
            "scale out above 60 %",
            "coap-server replicas",
            "pod …-pod2",
        ] {
            assert!(svg_text.contains(needle), "the SVG lacks {needle:?}");
        }
        if let Ok(keep) = std::env::var("IOT_KEEP_PLOT") {
            std::fs::copy(&png, keep).unwrap();
        }
    }

    #[test]
    fn long_pod_names_keep_their_distinct_tail() {
        assert_eq!(
            short_pod_name("lab-coap-server-6d5f7c9b8-x2x7q"),
            "pod …-x2x7q"
        );
        assert_eq!(short_pod_name("web-1"), "web-1");
    }
}
