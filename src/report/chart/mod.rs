//! Charts, each drawn once per backend: a 1200 px PNG for the page and the pull request, and an
//! SVG that scales. The font is embedded because CI machines have no system fonts and plotters'
//! `ab_glyph` backend finds none on its own.

mod anomalies;
mod capacity;
mod ceilings;
mod latency;
mod ratios;
mod throughput;
mod units_left;

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, bail};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(crate) use anomalies::Anomalies;
pub(crate) use capacity::Capacity;
pub(crate) use ceilings::CeilingRatios;
pub(crate) use latency::{Curve, LatencySpectrum};
pub(crate) use ratios::Ratios;
pub(crate) use throughput::Throughput;
pub(crate) use units_left::{Line, Measure, UnitsLeft};

/// Width of every PNG: readable in a pull request without zooming.
pub(crate) const WIDTH: u32 = 1200;
const FONT: &str = "sans-serif";
const DEJAVU_SANS: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

pub(crate) const TITLE_SIZE: u32 = 30;
pub(crate) const AXIS_SIZE: u32 = 22;
pub(crate) const LABEL_SIZE: u32 = 18;

/// Okabe–Ito (tells strategies apart for colour-blind readers too), then five more for runs with
/// many strategies. Red is kept out so that it only
/// ever means an anomaly.
const PALETTE: [RGBColor; 12] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
    RGBColor(23, 190, 207),
    RGBColor(117, 112, 179),
    RGBColor(140, 86, 75),
    RGBColor(188, 189, 34),
    RGBColor(0, 80, 80),
];
pub(crate) const ANOMALY_RED: RGBColor = RGBColor(213, 40, 40);
pub(crate) const CLEAN_GREEN: RGBColor = RGBColor(198, 234, 200);
pub(crate) const UNKNOWN_GREY: RGBColor = RGBColor(225, 225, 225);

/// The colour of the `index`-th strategy, the same in every chart.
pub(crate) fn strategy_colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

pub(crate) fn font(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
}

pub(crate) fn centred(size: u32) -> TextStyle<'static> {
    font(size).pos(Pos::new(HPos::Center, VPos::Center))
}

/// Text centred horizontally, standing on its anchor point: a label above a bar.
pub(crate) fn above(size: u32) -> TextStyle<'static> {
    font(size).pos(Pos::new(HPos::Center, VPos::Bottom))
}

/// One chart: a name for its files, a height, and how to draw it on any backend.
pub(crate) trait Chart {
    /// File stem under `charts/`.
    fn name(&self) -> String;
    /// Pixel height at [`WIDTH`].
    fn height(&self) -> u32 {
        700
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

pub(crate) type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// The files one chart was written to.
#[derive(Debug, Clone)]
pub struct ChartFiles {
    pub name: String,
    pub png: PathBuf,
    pub svg: PathBuf,
}

/// Writes `chart` as `<dir>/<name>.png` and `<dir>/<name>.svg`.
pub(crate) fn write(chart: &impl Chart, dir: &Path) -> anyhow::Result<ChartFiles> {
    register_font()?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = chart.name();
    let size = (WIDTH, chart.height());
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    {
        let area = BitMapBackend::new(&png, size).into_drawing_area();
        area.fill(&WHITE)
            .and_then(|()| chart.draw(&area))
            .and_then(|()| area.present())
            .map_err(|err| anyhow::anyhow!("drawing {}: {err}", png.display()))?;
    }
    let mut text = String::new();
    {
        let area = SVGBackend::with_string(&mut text, size).into_drawing_area();
        area.fill(&WHITE)
            .and_then(|()| chart.draw(&area))
            .and_then(|()| area.present())
            .map_err(|err| anyhow::anyhow!("drawing {}: {err}", svg.display()))?;
    }
    fs::write(&svg, text).with_context(|| format!("cannot write {}", svg.display()))?;
    Ok(ChartFiles { name, png, svg })
}

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok())
    {
        Ok(())
    } else {
        bail!("the embedded DejaVu Sans font could not be loaded")
    }
}

/// A short number for a bar label: 2 significant digits below 10, none above.
pub(crate) fn short(value: f64) -> String {
    if value == 0.0 {
        "0".to_owned()
    } else if value.abs() < 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.0}")
    }
}

/// Draws a vertical min–max whisker with caps at `x`.
pub(crate) fn whisker<DB, CT>(
    chart: &mut ChartContext<'_, DB, CT>,
    x: f64,
    half_cap: f64,
    (min, max): (f64, f64),
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    CT: CoordTranslate<From = (f64, f64)>,
{
    let style = BLACK.stroke_width(2);
    chart.draw_series([
        PathElement::new(vec![(x, min), (x, max)], style),
        PathElement::new(vec![(x - half_cap, min), (x + half_cap, min)], style),
        PathElement::new(vec![(x - half_cap, max), (x + half_cap, max)], style),
    ])?;
    Ok(())
}

/// A linear f64 axis whose ticks are exactly the given values: bar groups at 0, 1, 2… or
/// percentiles at p50, p90, p99…, where plotters' own "nice number" ticks would fall between.
#[derive(Debug, Clone)]
pub(crate) struct Ticked {
    pub(crate) range: Range<f64>,
    pub(crate) ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.range.start) / (self.range.end - self.range.start);
        #[expect(clippy::cast_possible_truncation, reason = "a pixel offset within the chart")]
        let offset = (fraction * f64::from(limit.1 - limit.0)).round() as i32;
        limit.0 + offset
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Light mesh lines between the ticks would only add noise.
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// The legend every chart draws the same way: boxed, on a nearly opaque white, at `position`.
pub(crate) fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font(font(LABEL_SIZE))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
