//! `report`: charts, `index.html` and `summary.md` from a results folder, or a comparison of two
//! runs with `--compare`.

use std::path::PathBuf;
use std::process::ExitCode;

use checkout_bench::report;
use clap::Parser;

/// Draw the charts and the page for a results folder (bench or Locust output), or compare two runs.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The results folder to render (ignored with --compare).
    #[arg(default_value = "results/latest")]
    dir: PathBuf,
    /// Compare two runs: print new ÷ old per strategy and write compare-<old id>.md and its chart
    /// into the new run's folder.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with = "dir")]
    compare: Option<Vec<PathBuf>>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.compare.as_deref() {
        Some([old, new]) => report::compare(old, new, new).map(|comparison| {
            print!("{}", comparison.text_table());
            if !comparison.differences.is_empty() {
                println!(
                    "note: the runs differ in more than the code: {}",
                    comparison.differences.join("; ")
                );
            }
            println!("wrote {} and {}", comparison.markdown.display(), comparison.chart.png.display());
        }),
        _ => report::render(&cli.dir).map(|rendered| {
            println!(
                "{}: wrote {} and {}",
                rendered.run_id,
                rendered.index_html.display(),
                rendered.summary_md.display()
            );
            for chart in &rendered.charts {
                println!("  {}", chart.png.display());
            }
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("report: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
