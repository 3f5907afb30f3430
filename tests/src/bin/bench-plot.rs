//! `bench-plot`: draws the benchmark matrix's plots and table from `quorate bench`'s results.jsonl
//! (SPEC "Benchmark output"). `scripts/bench.sh` runs it; by hand:
//!
//! ```text
//! bench-plot --results bench-out/results.jsonl --out bench-out/plots
//! ```
//!
//! Per payload kind (`transfers`, `opaque`) it writes, as SVG and PNG:
//! - `PAYLOAD-throughput`: the highest committed tx/s at each n, one line per protocol;
//! - `PAYLOAD-latency`: p50 (solid) and p99 (dashed) latency against n at each ladder's lowest
//!   offered rate, one colour per protocol;
//! - `PAYLOAD-curves`: p50 latency against committed tx/s (the ladder), one panel per n, one line
//!   per protocol.
//!
//! and `table.md`: every run, and a summary row per protocol × payload × n. When a configuration
//! ran more than once, its last line counts.

use anyhow::{bail, Context, Result};
use clap::Parser;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(about = "Plots and a table from quorate bench's results.jsonl")]
struct Args {
    /// results.jsonl written by `quorate bench`.
    #[arg(long)]
    results: PathBuf,
    /// Directory for the plots and table.md.
    #[arg(long)]
    out: PathBuf,
    /// TrueType font for the text (scripts/setup.sh bench installs DejaVu Sans).
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

/// One bench run: the fields the plots and table use.
#[derive(Clone, Debug)]
struct Run {
    protocol: String,
    payload: String,
    n: u64,
    offered: u64,
    tps: f64,
    p50: f64,
    p99: f64,
    view_timeouts: u64,
    msgs_per_block: f64,
    bytes_per_block: f64,
    cpu_cores: f64,
    rss_mb: f64,
    rss_mb_max: f64,
    git_rev: String,
}

impl Run {
    fn parse(line: &str) -> Result<Run> {
        let v: Value = serde_json::from_str(line)?;
        let num = |k: &str| -> Result<f64> {
            v[k].as_f64()
                .with_context(|| format!("field `{k}` missing or not a number"))
        };
        let text = |k: &str, default: &str| v[k].as_str().unwrap_or(default).to_string();
        Ok(Run {
            protocol: text("protocol", "?"),
            payload: text("payload", "transfers"),
            n: num("validators")? as u64,
            offered: num("offered_tps")? as u64,
            tps: num("tps")?,
            p50: num("latency_p50_ms")?,
            p99: num("latency_p99_ms")?,
            view_timeouts: v["view_timeouts"].as_u64().unwrap_or(0),
            msgs_per_block: num("msgs_per_block")?,
            bytes_per_block: num("bytes_per_block")?,
            cpu_cores: v["cpu_cores_per_node"].as_f64().unwrap_or(0.0),
            rss_mb: num("rss_mb_per_node")?,
            rss_mb_max: v["rss_mb_max"].as_f64().unwrap_or(0.0),
            git_rev: text("git_rev", "unknown"),
        })
    }
}

/// protocol → n → offered rate → run (the last one on record).
type Matrix = BTreeMap<String, BTreeMap<u64, BTreeMap<u64, Run>>>;

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("bench-plot: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    let mut runs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        runs.push(
            Run::parse(line)
                .with_context(|| format!("{} line {}", args.results.display(), i + 1))?,
        );
    }
    if runs.is_empty() {
        bail!("{} has no runs", args.results.display());
    }
    let font = std::fs::read(&args.font).with_context(|| {
        format!(
            "reading the font {} (scripts/setup.sh bench installs it; or pass --font)",
            args.font.display()
        )
    })?;
    // plotters keeps the font for the whole process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{} is not a usable TrueType font", args.font.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let mut by_payload: BTreeMap<String, Matrix> = BTreeMap::new();
    for run in &runs {
        by_payload
            .entry(run.payload.clone())
            .or_default()
            .entry(run.protocol.clone())
            .or_default()
            .entry(run.n)
            .or_default()
            .insert(run.offered, run.clone());
    }
    for (payload, matrix) in &by_payload {
        // Each figure as SVG and PNG: plotters' backends are distinct types, so the generic
        // drawing function is instantiated once for each.
        macro_rules! figure {
            ($draw:ident, $size:expr) => {
                draw_both(
                    &args.out.join(format!("{payload}-{}", stringify!($draw))),
                    $size,
                    |root| $draw(root, payload, matrix),
                    |root| $draw(root, payload, matrix),
                )?
            };
        }
        figure!(throughput, (800, 500));
        figure!(latency, (800, 500));
        figure!(curves, (1000, 800));
    }
    let table = table(&by_payload);
    let path = args.out.join("table.md");
    std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    println!("plots and table.md written to {}", args.out.display());
    Ok(())
}

/// Draws one figure to `base.svg` and `base.png` (plotters' backends are distinct types, hence
/// the two closures).
fn draw_both(
    base: &Path,
    size: (u32, u32),
    svg: impl FnOnce(DrawingArea<SVGBackend, Shift>) -> Result<()>,
    png: impl FnOnce(DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    let svg_path = base.with_extension("svg");
    let root = SVGBackend::new(&svg_path, size).into_drawing_area();
    svg(root).with_context(|| format!("drawing {}", svg_path.display()))?;
    let png_path = base.with_extension("png");
    let root = BitMapBackend::new(&png_path, size).into_drawing_area();
    png(root).with_context(|| format!("drawing {}", png_path.display()))?;
    Ok(())
}

fn color(protocol: &str) -> RGBColor {
    match protocol {
        "hotstuff" => RGBColor(31, 119, 180),
        "pbft" => RGBColor(214, 39, 40),
        _ => RGBColor(44, 160, 44),
    }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// The run with the highest committed throughput in one ladder.
/// Headroom over the highest point, so the legend (upper left) sits above the data.
const HEADROOM: f64 = 1.4;

/// Whether a run committed anything (within its window, or after it: then its throughput is 0
/// but its latency is real). A run that committed nothing has no latency to plot.
fn committed(run: &Run) -> bool {
    run.tps > 0.0 || run.p50 > 0.0
}

/// Axis labels with as many decimals as a short range needs.
fn tick(value: &f64, top: f64) -> String {
    if top < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

fn peak(ladder: &BTreeMap<u64, Run>) -> Option<&Run> {
    ladder.values().max_by(|a, b| a.tps.total_cmp(&b.tps))
}

fn n_range(matrix: &Matrix) -> std::ops::Range<f64> {
    let max_n = matrix
        .values()
        .flat_map(|by_n| by_n.keys())
        .copied()
        .max()
        .unwrap_or(4);
    0.0..(max_n as f64 * 1.08).max(8.0)
}

/// A chart with the validator count on x and `y_desc` from 0 to a little over `top` on y.
fn against_n<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    caption: &str,
    matrix: &Matrix,
    top: f64,
    y_desc: &str,
) -> Result<Chart<'a, DB>> {
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(n_range(matrix), 0.0..(top * HEADROOM).max(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("validators (n)")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

fn throughput<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    payload: &str,
    matrix: &Matrix,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let top = matrix
        .values()
        .flat_map(|by_n| by_n.values().filter_map(peak))
        .map(|r| r.tps)
        .fold(0.0, f64::max);
    let caption = format!("{payload}: highest committed throughput");
    let mut chart = against_n(&root, &caption, matrix, top, "committed tx/s")?;
    for (protocol, by_n) in matrix {
        let points: Vec<(f64, f64)> = by_n
            .iter()
            .filter_map(|(&n, ladder)| Some((n as f64, peak(ladder)?.tps)))
            .collect();
        line(&mut chart, protocol, &points)?;
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

fn latency<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    payload: &str,
    matrix: &Matrix,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    // Each ladder's lowest offered rate that committed anything: the light-load latency.
    let light = |ladder: &BTreeMap<u64, Run>| ladder.values().find(|r| committed(r)).cloned();
    let top = matrix
        .values()
        .flat_map(|by_n| by_n.values().filter_map(light))
        .map(|r| r.p99)
        .fold(0.0, f64::max);
    let rates: std::collections::BTreeSet<u64> = matrix
        .values()
        .flat_map(|by_n| by_n.values().filter_map(light))
        .map(|r| r.offered)
        .collect();
    let rates: Vec<String> = rates.iter().map(|r| r.to_string()).collect();
    let caption = format!(
        "{payload}: latency at {} tx/s offered (p50 solid, p99 dashed)",
        rates.join("/")
    );
    let mut chart = against_n(
        &root,
        &caption,
        matrix,
        top,
        "submit-to-commit latency (ms)",
    )?;
    for (protocol, by_n) in matrix {
        let c = color(protocol);
        let runs: Vec<(u64, Run)> = by_n
            .iter()
            .filter_map(|(&n, ladder)| Some((n, light(ladder)?)))
            .collect();
        let p50: Vec<(f64, f64)> = runs.iter().map(|(n, r)| (*n as f64, r.p50)).collect();
        let p99: Vec<(f64, f64)> = runs.iter().map(|(n, r)| (*n as f64, r.p99)).collect();
        line(&mut chart, protocol, &p50)?;
        chart
            .draw_series(DashedLineSeries::new(p99.clone(), 8, 5, c.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(p99.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

fn curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    payload: &str,
    matrix: &Matrix,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let ns: std::collections::BTreeSet<u64> = matrix
        .values()
        .flat_map(|by_n| by_n.keys())
        .copied()
        .collect();
    let ns: Vec<u64> = ns.into_iter().collect();
    let root = root
        .titled(
            &format!("{payload}: p50 latency against committed throughput, per n"),
            ("sans-serif", 22),
        )
        .map_err(err)?;
    let cols = if ns.len() > 1 { 2 } else { 1 };
    let rows = ns.len().div_ceil(cols);
    let panels = root.split_evenly((rows, cols));
    for (panel, &n) in panels.iter().zip(&ns) {
        let ladders: Vec<(&String, &BTreeMap<u64, Run>)> = matrix
            .iter()
            .filter_map(|(p, by_n)| Some((p, by_n.get(&n)?)))
            .collect();
        let runs = || {
            ladders
                .iter()
                .flat_map(|(_, l)| l.values())
                .filter(|r| committed(r))
        };
        let max_tps = runs().map(|r| r.tps).fold(0.0, f64::max);
        let max_p50 = runs().map(|r| r.p50).fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("n = {n}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0.0..(max_tps * 1.1).max(1.0),
                0.0..(max_p50 * HEADROOM).max(1.0),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("committed tx/s")
            .y_desc("p50 ms")
            .x_labels(6)
            .x_label_formatter(&|x| tick(x, max_tps * 1.1))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        for (protocol, ladder) in &ladders {
            let points: Vec<(f64, f64)> = ladder
                .values()
                .filter(|r| committed(r))
                .map(|r| (r.tps, r.p50))
                .collect();
            line(&mut chart, protocol, &points)?;
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// One protocol's line with its points, labelled for the legend.
fn line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    protocol: &str,
    points: &[(f64, f64)],
) -> Result<()> {
    let c = color(protocol);
    chart
        .draw_series(LineSeries::new(points.to_vec(), c.stroke_width(2)))
        .map_err(err)?
        .label(protocol)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))
        .map_err(err)?;
    Ok(())
}

/// The chart type every figure here uses: f64 on both axes.
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(err)
}

fn table(by_payload: &BTreeMap<String, Matrix>) -> String {
    let revs: std::collections::BTreeSet<&str> = by_payload
        .values()
        .flat_map(|m| m.values())
        .flat_map(|by_n| by_n.values())
        .flat_map(|ladder| ladder.values())
        .map(|r| r.git_rev.as_str())
        .collect();
    let mut out = format!(
        "Made at git revision {}.\n\nPeak of each ladder (the run with the highest committed tx/s):\n\n",
        revs.into_iter().collect::<Vec<_>>().join(", ")
    );
    out.push_str("| protocol | payload | n | offered tx/s | committed tx/s | p50 ms | p99 ms | view timeouts | msgs/block | bytes/block | CPU cores/node | RSS MB/node (max) |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let row = |r: &Run| {
        format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.2} | {:.0} ({:.0}) |\n",
            r.protocol,
            r.payload,
            r.n,
            r.offered,
            r.tps,
            r.p50,
            r.p99,
            r.view_timeouts,
            r.msgs_per_block,
            r.bytes_per_block,
            r.cpu_cores,
            r.rss_mb,
            r.rss_mb_max
        )
    };
    for matrix in by_payload.values() {
        for by_n in matrix.values() {
            for ladder in by_n.values() {
                if let Some(r) = peak(ladder) {
                    out.push_str(&row(r));
                }
            }
        }
    }
    out.push_str("\nEvery run:\n\n");
    out.push_str("| protocol | payload | n | offered tx/s | committed tx/s | p50 ms | p99 ms | view timeouts | msgs/block | bytes/block | CPU cores/node | RSS MB/node (max) |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for matrix in by_payload.values() {
        for by_n in matrix.values() {
            for ladder in by_n.values() {
                for r in ladder.values() {
                    out.push_str(&row(r));
                }
            }
        }
    }
    out
}
