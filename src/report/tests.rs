//! Tests over the committed fixtures: `tests/fixtures/results-sample/` follows
//! `results/README.md`, `tests/fixtures/locust-sample/` Locust 2.x's `--csv --csv-full-history`.

use std::fs;
use std::path::{Path, PathBuf};

use super::model::{Origin, Outcome, Verdict};
use super::{compare, figures, load, render};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A copy of a fixture in a fresh temporary folder, so rendering never writes into the repository.
fn scratch(name: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("checkout-bench-report-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    copy_dir(&fixture(name), &dir);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[track_caller]
fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
}

#[test]
fn loads_the_sample_folder() {
    let run = load::run(&fixture("results-sample")).unwrap();
    assert_eq!(run.id, "20261125T104500Z-1c15c75");
    assert_eq!(run.origin, Origin::Bench);
    assert_eq!(run.strategies(), ["memory", "sql-atomic", "sql-naive"], "run.json's order");
    assert_eq!(run.summary.len(), 6);
    assert!(run.gate.as_ref().unwrap().passed);
    let naive: Vec<_> = run.summary.iter().filter(|row| row.strategy == "sql-naive").collect();
    assert!(naive.iter().all(|row| row.verdict == Verdict::Flagged && !row.safe));
    assert_eq!(naive.iter().map(|row| row.oversold).sum::<i64>(), 21);

    let by = figures::by_strategy(&run);
    let memory = &by[0];
    assert_close(memory.sales_per_sec.median, 2450.0);
    assert_close(memory.sales_per_sec.min, 2400.0);
    assert_close(memory.sales_per_sec.max, 2500.0);
    assert_eq!(by[2].anomalies[0], 21, "oversold summed over repetitions");
    assert_eq!(by[2].verdict, Verdict::Flagged);
    assert_eq!(by[1].verdict, Verdict::Clean);

    let spectrum = figures::latency_spectrum(&run, "sql-atomic", Outcome::Success);
    let p99 = spectrum.iter().find(|(p, _)| *p == 99.0).unwrap().1;
    assert_close(p99, (9.8 + 11.2) / 2.0);
    let units = figures::units_left_over_time(&run, "sql-naive").unwrap();
    assert_eq!(units[0], (0.0, 500.0), "starts from the full stock");
    assert_eq!(units.last().unwrap().1, -12.0, "repetition 1 oversold 12");
}

#[test]
fn render_writes_every_output() {
    let dir = scratch("results-sample", "render");
    let rendered = render(&dir).unwrap();
    let names: Vec<&str> = rendered.charts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["throughput", "latency", "units_left", "anomalies"]);
    for chart in &rendered.charts {
        let png = fs::read(&chart.png).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{} is not a PNG", chart.png.display());
        let svg = fs::read_to_string(&chart.svg).unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{} is not an SVG", chart.svg.display());
        assert!(svg.contains("<text"), "{} has no text: the font did not load", chart.svg.display());
        assert_eq!(chart.png.parent(), Some(dir.join("charts").as_path()));
    }
    let html = fs::read_to_string(&rendered.index_html).unwrap();
    assert!(html.contains("<table class=\"summary\">"));
    for strategy in ["memory", "sql-atomic", "sql-naive"] {
        assert!(html.contains(&format!("<td>{strategy}</td>")), "index.html lacks {strategy}");
    }
    assert!(html.contains("<tr class=\"flagged\"><td>sql-naive</td>"), "sql-naive's row is coloured flagged");
    assert_eq!(html.matches("<svg").count(), 4, "every chart inlined");
    assert!(html.contains("1c15c75e0a7f3b2d9c8e4f6a1b2c3d4e5f607182"), "run metadata shown");
    assert!(html.contains("http_503_backend_unavailable"), "errors table shown");
    let md = fs::read_to_string(&rendered.summary_md).unwrap();
    assert!(md.contains("| sql-naive | no (by design) | flagged | 750 (700–800) |"), "{md}");
    assert!(md.contains("oversold 21"));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ceiling_ratios_beside_a_run_get_their_chart() {
    let dir = scratch("results-sample", "ceilings");
    fs::write(
        dir.join("ceiling_ratios.csv"),
        "subject,subject_ops_per_sec,ceiling,ceiling_ops_per_sec,ceiling_min,ceiling_max,ratio,target,status\n\
         memory,40000,wrk-static,100000,90000,110000,0.4,0.5,missed\n\
         redis-lua,3000,redis-reserve-check,90000,85000,95000,0.033,,\n",
    )
    .unwrap();
    let rendered = render(&dir).unwrap();
    let chart = rendered.charts.iter().find(|c| c.name == "ceilings").expect("a ceilings chart");
    let svg = fs::read_to_string(&chart.svg).unwrap();
    assert!(svg.contains("memory / wrk-static") && svg.contains("target ≥0.50"), "labels drawn");
    let html = fs::read_to_string(&rendered.index_html).unwrap();
    assert_eq!(html.matches("<svg").count(), rendered.charts.len(), "every chart inlined");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_malformed_csv_names_the_file_and_line() {
    let dir = scratch("results-sample", "malformed");
    let path = dir.join("summary.csv");
    let text = fs::read_to_string(&path).unwrap().replacen(",8000,8000,500,", ",8000,lots,500,", 1);
    fs::write(&path, text).unwrap();
    let message = format!("{:#}", render(&dir).unwrap_err());
    assert!(message.contains("summary.csv"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_file_or_folder_is_named() {
    let missing = Path::new("/nonexistent/results/latest");
    let message = format!("{:#}", render(missing).unwrap_err());
    assert!(
        message.contains("/nonexistent/results/latest") && message.contains("does not exist"),
        "{message}"
    );

    let dir = scratch("results-sample", "missing-file");
    fs::remove_file(dir.join("latency.csv")).unwrap();
    let message = format!("{:#}", render(&dir).unwrap_err());
    assert!(message.contains("latency.csv"), "{message}");
    fs::remove_dir_all(dir).unwrap();

    let empty = std::env::temp_dir().join(format!("checkout-bench-report-empty-{}", std::process::id()));
    fs::create_dir_all(&empty).unwrap();
    let message = format!("{:#}", render(&empty).unwrap_err());
    assert!(message.contains("not a results folder"), "{message}");
    fs::remove_dir_all(empty).unwrap();
}

#[test]
fn strategies_on_two_databases_get_one_row_each_side_by_side() {
    let dir = scratch("results-sample", "by-database");
    let summary = fs::read_to_string(dir.join("summary.csv")).unwrap();
    let on_mariadb: Vec<String> = summary
        .lines()
        .filter(|line| line.split(',').nth(1) == Some("sql-atomic"))
        .map(|line| {
            line.replacen(",sql-atomic,", ",sql-atomic@mysql,", 1).replace(",500.0,50,", ",800.0,50,")
        })
        .collect();
    fs::write(dir.join("summary.csv"), format!("{summary}{}\n", on_mariadb.join("\n"))).unwrap();
    let rendered = render(&dir).unwrap();
    let md = fs::read_to_string(&rendered.summary_md).unwrap();
    assert!(md.contains("### By database"), "{md}");
    assert!(
        md.contains("| sql-atomic | – | – | 450 (400–500) | 600 (400–800) | clean | clean |"),
        "one row, both databases: {md}"
    );
    assert!(!md.contains("| memory | – |"), "memory ran on one database only: {md}");
    let html = fs::read_to_string(&rendered.index_html).unwrap();
    assert!(html.contains("<table class=\"by-database\">"), "the page shows it too");
    let plain = scratch("results-sample", "by-database-plain");
    let md = fs::read_to_string(render(&plain).unwrap().summary_md).unwrap();
    assert!(!md.contains("By database"), "a run on one database has no such table");
    fs::remove_dir_all(dir).unwrap();
    fs::remove_dir_all(plain).unwrap();
}

#[test]
fn the_sell_out_at_saturation_comes_from_the_step_or_from_the_flash_sale() {
    let dir = scratch("results-sample", "saturation");
    let summary = fs::read_to_string(dir.join("summary.csv")).unwrap();
    let header = summary.lines().next().unwrap();
    // memory ran again at 12,000 req/s and sold out in 40 ms; the others only had the flash sale.
    let memory = summary
        .lines()
        .find(|line| line.split(',').nth(1) == Some("memory"))
        .unwrap()
        .replacen(",open,4000,", ",open,12000,", 1)
        .replacen(",2500.0,200.0,", ",12500.0,40.0,", 1);
    fs::write(dir.join("saturation.csv"), format!("{header}\n{memory}\n")).unwrap();
    let rendered = render(&dir).unwrap();
    let md = fs::read_to_string(&rendered.summary_md).unwrap();
    assert!(md.contains("### Sold out at saturation"), "{md}");
    assert!(
        md.contains("| memory | – | 12000 | its own, above its capacity | 12500 | 40 | 40 | clean |"),
        "{md}"
    );
    assert!(
        md.contains("| sql-atomic | – | 4000 | the flash sale (median) | 1125 | 450 | 450 | clean |"),
        "a strategy without a run of its own reads from the flash sale: {md}"
    );
    let html = fs::read_to_string(&rendered.index_html).unwrap();
    assert!(html.contains("<table class=\"saturation\">"), "the page shows it too");
    let plain = scratch("results-sample", "saturation-none");
    let md = fs::read_to_string(render(&plain).unwrap().summary_md).unwrap();
    assert!(!md.contains("at saturation"), "a run without the step has no such table");
    fs::remove_dir_all(dir).unwrap();
    fs::remove_dir_all(plain).unwrap();
}

#[test]
fn compare_reports_new_over_old() {
    let old = scratch("results-sample", "compare-old");
    let new = scratch("results-sample", "compare-new");
    // The new run: memory sells twice as fast; sql-atomic's p99 halves; run id differs.
    let summary = fs::read_to_string(new.join("summary.csv")).unwrap();
    let mut lines: Vec<String> = Vec::new();
    for line in summary.lines() {
        let mut cells: Vec<String> = line.split(',').map(str::to_owned).collect();
        if cells[1] == "memory" {
            let sales: f64 = cells[17].parse().unwrap();
            cells[17] = (sales * 2.0).to_string();
        }
        if cells[1] == "sql-atomic" {
            let p99: f64 = cells[24].parse().unwrap();
            cells[24] = (p99 / 2.0).to_string();
        }
        lines.push(cells.join(","));
    }
    fs::write(new.join("summary.csv"), lines.join("\n") + "\n").unwrap();
    let run_json =
        fs::read_to_string(new.join("run.json")).unwrap().replace("20261125T104500Z-1c15c75", "new-run");
    fs::write(new.join("run.json"), run_json).unwrap();

    // Capacity: memory from 8,000 to 12,000 req/s; sql-atomic's new figure is only a lower bound.
    let capacity = |dir: &std::path::Path, memory: f64, atomic: f64, atomic_at_least: bool| {
        let row = |strategy: &str, capacity: f64, at_least: bool| crate::run_folder::CapacityRow {
            run_id: "r".into(),
            strategy: strategy.into(),
            repetition: 1,
            safe: true,
            slo_ms: 100.0,
            probe_secs: 2.0,
            cap_rps: 16_000.0,
            capacity_rps: capacity,
            at_least,
            first_fail_rps: None,
            sales_per_sec: capacity,
            achieved_rps: capacity,
            p50_ms: Some(1.0),
            p99_ms: Some(9.0),
            steps: 5,
        };
        let rows = [row("memory", memory, false), row("sql-atomic", atomic, atomic_at_least)];
        crate::run_folder::write_csv(&dir.join("capacity.csv"), &rows).unwrap();
    };
    capacity(&old, 8_000.0, 2_000.0, false);
    capacity(&new, 12_000.0, 16_000.0, true);

    let comparison = super::compare(&old, &new, &new).unwrap();
    assert_eq!(
        (comparison.old_id.as_str(), comparison.new_id.as_str()),
        ("20261125T104500Z-1c15c75", "new-run")
    );
    let memory = &comparison.strategies[0];
    assert_eq!(memory.strategy, "memory");
    assert_close(memory.ratio("sales_per_sec").unwrap(), 2.0);
    assert_close(memory.ratio("p99_ms").unwrap(), 1.0);
    assert_close(memory.ratio("anomalies").unwrap(), 1.0);
    assert_close(memory.ratio("capacity_rps").unwrap(), 1.5);
    let atomic = &comparison.strategies[1];
    assert_eq!(atomic.ratio("capacity_rps"), None, "a lower bound is not compared as a figure");
    assert_close(atomic.ratio("p99_ms").unwrap(), 0.5);
    assert_close(atomic.ratio("sales_per_sec").unwrap(), 1.0);
    let naive = &comparison.strategies[2];
    let anomalies = naive.figures.iter().find(|f| f.key == "anomalies").unwrap();
    assert_eq!((anomalies.old, anomalies.new), (Some(21.0), Some(21.0)));

    assert!(comparison.markdown.ends_with("compare-20261125T104500Z-1c15c75.md"));
    let md = fs::read_to_string(&comparison.markdown).unwrap();
    assert!(md.contains("| memory | 8000 → 12000 (1.50×) | 2450 → 4900 (2.00×) |"), "{md}");
    assert!(md.contains("| sql-atomic | 2000 → – (–) |"), "{md}");
    assert!(fs::metadata(&comparison.chart.png).unwrap().len() > 0);
    assert!(comparison.text_table().contains("2450 → 4900 (2.00×)"));
    fs::remove_dir_all(old).unwrap();
    fs::remove_dir_all(new).unwrap();
}

#[test]
fn compare_keeps_strategies_of_one_run_apart() {
    let old = load::run(&fixture("results-sample")).unwrap();
    let mut new = old.clone();
    new.summary.retain(|row| row.strategy != "sql-naive");
    let (compared, only_old, only_new) = compare::strategies(&old, &new);
    assert_eq!(compared.len(), 2);
    assert_eq!(only_old, ["sql-naive"]);
    assert!(only_new.is_empty());
}

/// Regular customers' purchases are named apart and do not count as hot-product sales; the saved
/// audit gives the anomalies and the verdict, and without it the verdict is unknown.
#[test]
fn locust_hot_sales_stand_apart_and_the_verdict_comes_from_the_saved_audit() {
    let dir = scratch("locust-sample", "locust-audit");
    let stats = dir.join("run_stats.csv");
    let mut text = fs::read_to_string(&stats).unwrap();
    text = text.replace(
        ",Aggregated,",
        "POST,sql-atomic (regular),40,0,9,11.2,3,60.4,120.0,10.0,0.0,9,11,12,13,17,21,28,35,60,60,60\n,Aggregated,",
    );
    fs::write(&stats, text).unwrap();
    let run = load::run(&dir).unwrap();
    assert_eq!(run.origin, Origin::Locust { audited: false });
    let atomic = run.summary.iter().find(|row| row.strategy == "sql-atomic").unwrap();
    assert_eq!(atomic.confirmed, 198 + 40, "every acknowledged purchase is counted");
    assert_close(atomic.sales_per_sec, 49.5);
    assert_eq!(atomic.verdict, Verdict::Unknown, "no audit saved");

    let audit = serde_json::json!({
        "clean": false,
        "settled": true,
        "total": {"oversold": 2, "duplicated": 0, "redis_drift": 0},
        "queues": {"pending": 0, "dead_lettered": 0, "accepted_then_cancelled": 0},
        "redis": {"checked": false},
        "ledgers": {"memory": {"total": {"oversold": 0, "duplicated": 1}}}
    });
    fs::write(dir.join("run_audit.json"), audit.to_string()).unwrap();
    let run = load::run(&dir).unwrap();
    assert_eq!(run.origin, Origin::Locust { audited: true });
    let verdict = |name: &str| run.summary.iter().find(|row| row.strategy == name).unwrap().verdict;
    assert_eq!(verdict("sql-atomic"), Verdict::Invalid, "safe, and the audit found 2 oversold");
    assert_eq!(verdict("sql-naive"), Verdict::Flagged);
    let memory = run.summary.iter().find(|row| row.strategy == "memory").unwrap();
    assert_eq!((memory.oversold, memory.duplicated), (2, 1), "memory's own ledger counts for it");
    let rendered = render(&dir).unwrap();
    let html = fs::read_to_string(&rendered.index_html).unwrap();
    assert!(html.contains("INVALID") && !html.contains("no audit saved"), "the page shows the audit");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn locust_csv_maps_into_the_run_model() {
    let run = load::run(&fixture("locust-sample")).unwrap();
    assert_eq!(run.origin, Origin::Locust { audited: false });
    assert!(!run.origin.audited());
    assert_eq!(run.strategies(), ["memory", "sql-atomic", "sql-naive"], "/products is not a purchase");
    let atomic = run.summary.iter().find(|row| row.strategy == "sql-atomic").unwrap();
    assert_eq!((atomic.confirmed, atomic.sold_out, atomic.errors, atomic.answered), (198, 1000, 2, 1200));
    // 198 successes over the 4 s its 200 requests took (Request Count ÷ Requests/s).
    assert_close(atomic.sales_per_sec, 49.5);
    assert_close(atomic.p99_ms.unwrap(), 35.0);
    assert_close(atomic.max_ms.unwrap(), 60.4);
    assert_close(atomic.time_to_sell_out_ms.unwrap(), 4000.0);
    let memory = run.summary.iter().find(|row| row.strategy == "memory").unwrap();
    assert_close(memory.sales_per_sec, 125.0);
    assert!(!run.summary.iter().find(|row| row.strategy == "sql-naive").unwrap().safe);

    let memory_series: Vec<_> = run.timeseries.iter().filter(|row| row.strategy == "memory").collect();
    assert_eq!(memory_series.iter().map(|row| row.confirmed).sum::<u64>(), 200);
    assert_eq!(memory_series.iter().map(|row| row.sold_out).sum::<u64>(), 1300);
    assert!(figures::units_left_over_time(&run, "memory").is_none(), "Locust does not know the stock");
    assert_eq!(figures::acknowledged_over_time(&run, "memory").last().unwrap().1, 200.0);

    let errors: Vec<_> = run.errors.iter().filter(|row| row.strategy == "sql-naive").collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].count, 3);
    let spectrum = figures::latency_spectrum(&run, "sql-naive", Outcome::SoldOut);
    assert_eq!(spectrum.first(), Some(&(50.0, 6.0)));
}

#[test]
fn locust_json_maps_into_the_run_model() {
    let dir = std::env::temp_dir().join(format!("checkout-bench-report-locust-json-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let json = r#"[
      {"name": "memory", "method": "POST", "last_request_timestamp": 1764067502.0, "start_time": 1764067500.0,
       "num_requests": 10, "num_none_requests": 0, "num_failures": 0, "total_response_time": 30,
       "max_response_time": 9, "min_response_time": 1, "total_content_length": 1200,
       "response_times": {"1": 5, "2": 4, "9": 1},
       "num_reqs_per_sec": {"1764067500": 6, "1764067501": 4}, "num_fail_per_sec": {}},
      {"name": "memory (sold out)", "method": "POST", "last_request_timestamp": 1764067504.0,
       "start_time": 1764067500.0, "num_requests": 20, "num_none_requests": 0, "num_failures": 1,
       "total_response_time": 20, "max_response_time": 3, "min_response_time": 1, "total_content_length": 640,
       "response_times": {"1": 20}, "num_reqs_per_sec": {"1764067502": 20}, "num_fail_per_sec": {"1764067502": 1}},
      {"name": "/products", "method": "GET", "last_request_timestamp": 1764067504.0, "start_time": 1764067500.0,
       "num_requests": 3, "num_none_requests": 0, "num_failures": 0, "total_response_time": 3,
       "max_response_time": 1, "min_response_time": 1, "total_content_length": 0,
       "response_times": {"1": 3}, "num_reqs_per_sec": {"1764067500": 3}, "num_fail_per_sec": {}}
    ]"#;
    fs::write(dir.join("locust.json"), json).unwrap();
    let run = load::run(&dir).unwrap();
    assert_eq!(run.strategies(), ["memory"]);
    let memory = &run.summary[0];
    assert_eq!((memory.confirmed, memory.sold_out, memory.errors), (10, 19, 1));
    assert_close(memory.sales_per_sec, 5.0);
    assert_close(memory.p50_ms.unwrap(), 2.0);
    assert_close(memory.max_ms.unwrap(), 9.0);
    assert_close(memory.time_to_sell_out_ms.unwrap(), 3000.0);
    let confirmed: Vec<u64> = run.timeseries.iter().map(|row| row.confirmed).collect();
    assert_eq!(confirmed, [6, 4, 0]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn render_draws_locust_output() {
    let dir = scratch("locust-sample", "locust-render");
    let rendered = render(&dir).unwrap();
    assert_eq!(rendered.charts.len(), 4);
    let html = fs::read_to_string(&rendered.index_html).unwrap();
    assert!(html.contains("no audit saved"));
    assert!(html.contains("Locust output"));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_headline_names_the_fastest_clean_safe_strategy_and_every_anomaly() {
    let run = load::run(&fixture("results-sample")).unwrap();
    let mut by = figures::by_strategy(&run);
    let lines = super::table::headline(&by, true);
    assert!(
        lines[0].starts_with("Fastest clean safe strategy: sql-atomic"),
        "memory is the baseline: {lines:?}"
    );
    assert_eq!(lines[1], "sql-naive: oversold 21 (unsafe by design, as expected).");
    by[1].verdict = Verdict::Degraded;
    by[1].server_errors = 12;
    let lines = super::table::headline(&by, true);
    assert!(
        lines.iter().any(|line| line.starts_with("sql-atomic: DEGRADED") && line.contains("12 requests")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|line| line.starts_with("Fastest")),
        "a degraded strategy is not the clean winner: {lines:?}"
    );
    by[1].verdict = Verdict::Invalid;
    by[1].anomalies[2] = 1;
    let lines = super::table::headline(&by, true);
    assert!(
        !lines.iter().any(|line| line.starts_with("Fastest")),
        "an invalid strategy never wins: {lines:?}"
    );
    assert!(lines.contains(&"sql-atomic: lost 1 (INVALID: it claims to be safe).".to_owned()), "{lines:?}");
    let lines = super::table::headline(&by, false);
    assert!(lines.iter().any(|line| line.contains("unknown")), "Locust output has no audit: {lines:?}");
}

#[test]
fn compare_names_what_else_the_runs_did_differently() {
    let old = load::run(&fixture("results-sample")).unwrap();
    let mut new = old.clone();
    assert!(super::compare::differences(&old, &new).is_empty(), "a run against itself");
    let meta = new.meta.as_mut().unwrap();
    meta.options["load"]["rate"] = serde_json::json!(10_000.0);
    meta.preset = "seed-locust".to_owned();
    assert_eq!(
        super::compare::differences(&old, &new),
        ["preset: ci → seed-locust", "rate: 4000.0 → 10000.0"]
    );
}
