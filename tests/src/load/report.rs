//! Benchmark output: a human table on stdout and a JSON document under `artifacts/bench/`,
//! both stamped with the machine (CPU model, cores, memory, kernel) and the UTC date, so that
//! docs/BENCHMARKS.md can quote them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

/// Where a run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// MemTotal in GiB.
    pub memory_gib: f64,
    /// `uname -r` equivalent (/proc/sys/kernel/osrelease).
    pub kernel: String,
    /// The open-file limit of this process.
    pub open_files: u64,
    /// `/proc/loadavg` when the report was made: other work on a shared machine skews numbers.
    pub load_average: String,
}

impl Machine {
    /// Reads /proc (fields it cannot read are empty or 0).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0.0);
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_files = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(3))
            .and_then(|soft| soft.parse().ok())
            .unwrap_or(0);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            open_files,
            load_average: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// One line: `2 cores, 23.4 GiB, <cpu>, Linux <kernel>`.
    pub fn describe(&self) -> String {
        format!(
            "{} cores, {} GiB, {}, Linux {}, load {}",
            self.cores, self.memory_gib, self.cpu, self.kernel, self.load_average
        )
    }
}

/// The current time as an HTTP date (`Sun, 06 Dec 2026 04:20:00 GMT`).
pub fn utc_now() -> String {
    httpdate::fmt_http_date(SystemTime::now())
}

/// A plain-text table with right-aligned numeric columns.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|&title| title.to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells are blank, extra ones are kept).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, columns padded to their widest cell.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in self.rows.iter().chain([&self.header]) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, row: &[String]| {
            for (column, width) in widths.iter().enumerate() {
                let cell = row.get(column).map_or("", String::as_str);
                if column == 0 {
                    let _ = write!(out, "{cell:<width$}");
                } else {
                    let _ = write!(out, "  {cell:>width$}");
                }
            }
            out.push('\n');
        };
        line(&mut out, &self.header);
        let rule: Vec<String> = widths.iter().map(|&width| "-".repeat(width)).collect();
        line(&mut out, &rule);
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }

    /// The table as Markdown (for docs/BENCHMARKS.md).
    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.header.join(" | "));
        out.push_str(&format!(
            "|{}\n",
            self.header.iter().map(|_| "---|").collect::<String>()
        ));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}

/// Formats a rate: `12345` -> `12,345`.
pub fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if rounded < 0 {
        out.insert(0, '-');
    }
    out
}

/// Writes `document` (with `machine`, `date` and `command` added) as pretty JSON to `path`,
/// creating its directory; returns the path.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_json(path: &Path, mut document: Value) -> std::io::Result<PathBuf> {
    if let Value::Object(map) = &mut document {
        map.entry("machine")
            .or_insert_with(|| serde_json::to_value(Machine::detect()).unwrap_or(Value::Null));
        map.entry("date").or_insert_with(|| Value::from(utc_now()));
        map.entry("command")
            .or_insert_with(|| Value::from(std::env::args().collect::<Vec<_>>().join(" ")));
    }
    if let Some(directory) = path.parent() {
        std::fs::create_dir_all(directory)?;
    }
    let text = serde_json::to_string_pretty(&document).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_render_markdown() {
        let mut table = Table::new(&["what", "rate"]);
        table.row(vec!["publish".into(), thousands(1234567.4)]);
        table.row(vec!["x".into(), "7".into()]);
        let text = table.render();
        assert_eq!(text.lines().next(), Some("what          rate"));
        assert!(text.contains("publish  1,234,567"));
        assert!(table.markdown().starts_with("| what | rate |\n|---|---|\n"));
    }

    #[test]
    fn dates_are_utc_http_dates() {
        let now = utc_now();
        assert!(now.ends_with(" GMT"), "{now}");
        let parsed = httpdate::parse_http_date(&now).expect("parses back");
        let skew = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(skew.as_secs() < 5, "{now}");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(-1234.0), "-1,234");
    }
}
