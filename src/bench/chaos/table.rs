//! One row per (fault, strategy), its verdict, and the table people read: aligned text with its
//! notes, plus the CSV line of `chaos.csv`.

use serde::Serialize;

use super::faults::Fault;
use super::storm::Tally;
use crate::run_folder::CsvRow;

/// What one fault did to one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub fault: Fault,
    /// The strategy's name; `mixed` for `same-key-mixed`.
    pub strategy: String,
    /// Whether the strategy claims to be safe: only safe strategies decide the exit status.
    pub safe: bool,
    /// Why this pair was not run, when it was not.
    pub skipped: Option<String>,
    pub tally: Tally,
    /// Acknowledged orders the server does not hold (or holds cancelled after a 201).
    pub lost: i64,
    /// Orders beyond the first for one idempotency key, and order ids acknowledged twice.
    pub duplicated: i64,
    /// Units in orders beyond the initial stock.
    pub oversold: i64,
    /// The audit's `total.stranded`: units taken in Redis that no order holds and no sweep gave
    /// back.
    pub stranded: i64,
    /// Orders the server holds that no client heard of.
    pub unheard: i64,
    /// The audit's `clean`.
    pub audit_clean: bool,
    /// Why the audit is not clean, beyond the columns above (`redis_drift 1`, …).
    pub audit_findings: Vec<String>,
    /// The audit's `settled` when it was read.
    pub settled: bool,
    /// Broken promises the fault revealed by itself, such as a non-zero exit after SIGTERM.
    pub problems: Vec<String>,
    /// A remark for the table's notes.
    pub note: Option<String>,
}

/// A row's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing lost, duplicated, oversold or stranded, and the audit is clean.
    Exact,
    /// What failed.
    NotExact(Vec<String>),
    /// Not run, and why.
    Skipped(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact => f.write_str("exact"),
            Self::NotExact(failed) => write!(f, "NOT EXACT ({})", failed.join(", ")),
            Self::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

impl Row {
    /// A pair not run.
    pub fn skipped(fault: Fault, strategy: &str, safe: bool, why: &str) -> Self {
        Self {
            fault,
            strategy: strategy.to_owned(),
            safe,
            skipped: Some(why.to_owned()),
            tally: Tally::default(),
            lost: 0,
            duplicated: 0,
            oversold: 0,
            stranded: 0,
            unheard: 0,
            audit_clean: true,
            audit_findings: Vec::new(),
            settled: true,
            problems: Vec::new(),
            note: None,
        }
    }

    pub fn verdict(&self) -> Verdict {
        if let Some(why) = &self.skipped {
            return Verdict::Skipped(why.clone());
        }
        let mut failed: Vec<String> = [
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("oversold", self.oversold),
            ("stranded", self.stranded),
        ]
        .into_iter()
        .filter(|(_, count)| *count != 0)
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
        if !self.audit_clean {
            failed.push(if self.audit_findings.is_empty() {
                "audit not clean".to_owned()
            } else {
                format!("audit not clean: {}", self.audit_findings.join(", "))
            });
        }
        if !self.settled {
            failed.push("not settled".to_owned());
        }
        failed.extend(self.problems.iter().cloned());
        if failed.is_empty() { Verdict::Exact } else { Verdict::NotExact(failed) }
    }

    /// Whether this row fails the run: a safe strategy that was run and is not exact.
    pub fn fails_the_run(&self) -> bool {
        self.safe && matches!(self.verdict(), Verdict::NotExact(_))
    }

    /// The row in one line, for the progress log.
    pub fn one_line(&self) -> String {
        if self.skipped.is_some() {
            return format!("[{} · {}] {}", self.fault, self.strategy, self.verdict());
        }
        let t = &self.tally;
        format!(
            "[{} · {}] {} requests, {} confirmed, {} 503s, {} connection errors{} → {}",
            self.fault,
            self.strategy,
            t.requests,
            t.confirmed,
            t.unavailable,
            t.connection_errors,
            if t.aborted > 0 { format!(", {} hung up", t.aborted) } else { String::new() },
            self.verdict()
        )
    }
}

const HEADER: [&str; 11] = [
    "fault",
    "strategy",
    "requests",
    "confirmed",
    "503s",
    "conn errors",
    "lost",
    "duplicated",
    "oversold",
    "stranded",
    "verdict",
];

/// The rows as an aligned text table (numbers right-aligned), followed by its notes.
pub fn text(rows: &[Row]) -> String {
    let cells: Vec<[String; 11]> = rows
        .iter()
        .map(|row| {
            let strategy = if row.safe { row.strategy.clone() } else { format!("{} (unsafe)", row.strategy) };
            let t = &row.tally;
            let count = |n: u64| if row.skipped.is_some() { "–".to_owned() } else { n.to_string() };
            let signed = |n: i64| if row.skipped.is_some() { "–".to_owned() } else { n.to_string() };
            [
                row.fault.to_string(),
                strategy,
                count(t.requests),
                count(t.confirmed),
                count(t.unavailable),
                count(t.connection_errors),
                signed(row.lost),
                signed(row.duplicated),
                signed(row.oversold),
                signed(row.stranded),
                row.verdict().to_string(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|title| title.chars().count());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let numeric = |column: usize| (2..=9).contains(&column);
    let render = |line: &[String]| {
        let padded: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(column, cell)| {
                let pad = " ".repeat(widths[column] - cell.chars().count());
                if numeric(column) { format!("{pad}{cell}") } else { format!("{cell}{pad}") }
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![render(&HEADER.map(str::to_owned)), render(&widths.map(|width| "-".repeat(width)))];
    out.extend(cells.iter().map(|line| render(line)));
    let notes = notes(rows);
    if !notes.is_empty() {
        out.push(String::new());
        out.extend(notes.into_iter().map(|note| format!("note: {note}")));
    }
    out.join("\n")
}

/// What the numbers alone do not say.
fn notes(rows: &[Row]) -> Vec<String> {
    let mut notes = Vec::new();
    for row in rows.iter().filter(|row| row.skipped.is_none()) {
        if let Some(note) = &row.note {
            notes.push(format!("{} · {}: {note}", row.fault, row.strategy));
        }
        if row.unheard == 0 {
            continue;
        }
        let why = if row.fault.clients_abort() {
            "clients that hung up before their answer; expected here, not counted as phantom"
        } else {
            "answered 503 or cut off, and never retried into a replay; not part of the verdict"
        };
        notes.push(format!(
            "{} · {}: {} orders held that no client heard of ({why})",
            row.fault, row.strategy, row.unheard
        ));
    }
    notes
}

/// One line of `chaos.csv` (`results/README.md`).
#[derive(Debug, Clone, Serialize)]
pub struct CsvLine {
    pub fault: &'static str,
    pub strategy: String,
    pub safe: bool,
    pub requests: u64,
    pub confirmed: u64,
    pub unavailable: u64,
    pub connection_errors: u64,
    pub aborted: u64,
    pub unsent: u64,
    pub lost: i64,
    pub duplicated: i64,
    pub oversold: i64,
    pub stranded: i64,
    pub unheard: i64,
    pub audit_clean: bool,
    pub settled: bool,
    pub verdict: String,
}

impl CsvRow for CsvLine {
    const COLUMNS: &'static [&'static str] = &[
        "fault",
        "strategy",
        "safe",
        "requests",
        "confirmed",
        "unavailable",
        "connection_errors",
        "aborted",
        "unsent",
        "lost",
        "duplicated",
        "oversold",
        "stranded",
        "unheard",
        "audit_clean",
        "settled",
        "verdict",
    ];
}

impl From<&Row> for CsvLine {
    fn from(row: &Row) -> Self {
        let t = row.tally;
        Self {
            fault: row.fault.as_str(),
            strategy: row.strategy.clone(),
            safe: row.safe,
            requests: t.requests,
            confirmed: t.confirmed,
            unavailable: t.unavailable,
            connection_errors: t.connection_errors,
            aborted: t.aborted,
            unsent: t.unsent,
            lost: row.lost,
            duplicated: row.duplicated,
            oversold: row.oversold,
            stranded: row.stranded,
            unheard: row.unheard,
            audit_clean: row.audit_clean,
            settled: row.settled,
            verdict: row.verdict().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_row(fault: Fault, strategy: &str) -> Row {
        Row {
            fault,
            strategy: strategy.to_owned(),
            safe: true,
            skipped: None,
            tally: Tally {
                requests: 412,
                confirmed: 200,
                unavailable: 9,
                connection_errors: 3,
                ..Tally::default()
            },
            lost: 0,
            duplicated: 0,
            oversold: 0,
            stranded: 0,
            unheard: 0,
            audit_clean: true,
            audit_findings: Vec::new(),
            settled: true,
            problems: Vec::new(),
            note: None,
        }
    }

    #[test]
    fn exact_needs_every_count_at_zero_and_a_clean_settled_audit() {
        let row = exact_row(Fault::PgTerminate, "sql-atomic");
        assert_eq!(row.verdict(), Verdict::Exact);
        assert!(!row.fails_the_run());
        let broken = [
            (Row { lost: 2, ..row.clone() }, "lost 2"),
            (Row { duplicated: 1, ..row.clone() }, "duplicated 1"),
            (Row { oversold: 3, ..row.clone() }, "oversold 3"),
            (Row { stranded: 4, ..row.clone() }, "stranded 4"),
            (Row { audit_clean: false, ..row.clone() }, "audit not clean"),
            (Row { settled: false, ..row.clone() }, "not settled"),
            (Row { problems: vec!["SIGTERM exit 1".into()], ..row.clone() }, "SIGTERM exit 1"),
        ];
        for (row, named) in broken {
            assert_eq!(row.verdict(), Verdict::NotExact(vec![named.to_owned()]), "{named}");
            assert!(row.verdict().to_string().starts_with("NOT EXACT ("), "{named}");
            assert!(row.fails_the_run(), "{named}: a safe strategy that is not exact fails the run");
        }
        let unheard = Row { unheard: 7, ..row.clone() };
        assert_eq!(unheard.verdict(), Verdict::Exact, "orders nobody heard of are not part of the verdict");
        let unsafe_one = Row { safe: false, oversold: 5, ..row };
        assert!(!unsafe_one.fails_the_run(), "an unsafe strategy's anomaly does not fail the run");
        assert_eq!(unsafe_one.verdict(), Verdict::NotExact(vec!["oversold 5".into()]));
    }

    #[test]
    fn several_failures_are_all_named() {
        let row =
            Row { lost: 1, oversold: 2, audit_clean: false, ..exact_row(Fault::ServerCrash, "redis-lua") };
        assert_eq!(row.verdict().to_string(), "NOT EXACT (lost 1, oversold 2, audit not clean)");
        let explained = Row { audit_findings: vec!["redis_drift 1".into()], ..row };
        assert_eq!(
            explained.verdict().to_string(),
            "NOT EXACT (lost 1, oversold 2, audit not clean: redis_drift 1)"
        );
    }

    #[test]
    fn the_table_is_aligned_and_carries_its_notes() {
        let rows = vec![
            exact_row(Fault::PgTerminate, "sql-atomic"),
            Row {
                oversold: 12,
                safe: false,
                audit_clean: false,
                ..exact_row(Fault::PgTerminate, "sql-naive")
            },
            Row::skipped(Fault::ServerCrash, "memory", true, "not durable by design"),
            Row { unheard: 31, ..exact_row(Fault::ClientAbort, "stream") },
        ];
        let table = text(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("fault") && lines[0].ends_with("verdict"), "{table}");
        assert!(lines[1].chars().all(|c| c == '-' || c == ' '), "a rule under the header: {table}");
        // Columns are aligned in characters: the skipped row's dashes are several bytes each.
        let verdict_at = lines[0].find("verdict").unwrap();
        for line in &lines[2..6] {
            let verdict: String = line.chars().skip(verdict_at).collect();
            assert!(
                ["exact", "NOT EXACT", "skipped"].iter().any(|v| verdict.starts_with(v)),
                "every verdict starts in the verdict column: {line:?}\n{table}"
            );
        }
        let requests_end = lines[0].find("requests").unwrap() + "requests".len();
        assert_eq!(&lines[2][requests_end - 3..requests_end], "412", "numbers are right-aligned: {table}");
        assert!(
            lines[3].contains("sql-naive (unsafe)")
                && lines[3].contains("NOT EXACT (oversold 12, audit not clean)")
        );
        assert!(lines[4].contains("skipped: not durable by design") && lines[4].contains('–'));
        assert!(
            table.contains("note: client-abort · stream: 31 orders held that no client heard of")
                && table.contains("not counted as phantom"),
            "{table}"
        );
    }

    #[test]
    fn the_csv_line_has_its_declared_columns() {
        let line = CsvLine::from(&exact_row(Fault::Sigterm, "sql-for-update"));
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(&line).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        assert_eq!(header, CsvLine::COLUMNS);
        assert!(text.lines().nth(1).unwrap().starts_with("sigterm,sql-for-update,true,412,200,9,3,"));
    }
}
