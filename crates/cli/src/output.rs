//! Output plumbing shared by the commands: buffered stdout that treats a
//! closed pipe (`| head`) as a normal end, and the exit-code contract.
use std::io::{self, BufWriter, Stdout, Write};

/// Exit code: everything fine.
pub const EXIT_OK: i32 = 0;
/// Exit code: a data problem was found (corruption, torn tail, bad checksum).
pub const EXIT_DATA_PROBLEM: i32 = 1;
/// Exit code: usage or IO error.
pub const EXIT_USAGE_OR_IO: i32 = 2;
/// Exit code of `promote`: refused by its checks (or not confirmed); nothing changed.
pub const EXIT_REFUSED: i32 = 4;
/// Exit code of `promote`: already promoted (anti-flap); nothing changed.
pub const EXIT_ALREADY_PROMOTED: i32 = 5;

/// Output format (`-w`, as etcdctl).
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum WriteOut {
    /// Lines and sentences.
    Simple,
    /// JSON.
    Json,
    /// Aligned tables with borders.
    Table,
}

impl WriteOut {
    /// `-w`, with the older `--json` switch meaning `-w json`.
    pub fn or_json(self, json: bool) -> WriteOut {
        if json { WriteOut::Json } else { self }
    }
}

/// Column widths of an etcdctl-style bordered table, grown row by row, so
/// a caller can size a table in one pass and print it in another.
pub struct Borders {
    width: Vec<usize>,
}

impl Borders {
    /// Widths of the header cells.
    pub fn new(headers: &[&str]) -> Self {
        Borders {
            width: headers.iter().map(|h| h.chars().count()).collect(),
        }
    }

    /// Widens the columns to fit `row` (cells beyond the headers are ignored).
    pub fn fit<S: AsRef<str>>(&mut self, row: &[S]) {
        for (w, c) in self.width.iter_mut().zip(row) {
            *w = (*w).max(c.as_ref().chars().count());
        }
    }

    /// `+----+---+` (no newline).
    pub fn rule(&self) -> String {
        self.width
            .iter()
            .map(|w| format!("+{}", "-".repeat(w + 2)))
            .collect::<String>()
            + "+"
    }

    /// `| a  | b |` (no newline), each cell padded to its column.
    pub fn line<S: AsRef<str>>(&self, cells: &[S]) -> String {
        let mut s = String::new();
        for (i, w) in self.width.iter().enumerate() {
            let c = cells.get(i).map(AsRef::as_ref).unwrap_or("");
            let pad = w - c.chars().count().min(*w);
            s.push_str(&format!("| {c}{} ", " ".repeat(pad)));
        }
        s + "|"
    }
}

/// An etcdctl-style table: `headers`, then `rows`, columns padded to the
/// widest cell (by characters).
pub fn bordered_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut b = Borders::new(headers);
    for r in rows {
        b.fit(r);
    }
    let rule = b.rule();
    let mut out = format!("{rule}\n{}\n{rule}\n", b.line(headers));
    for r in rows {
        out.push_str(&b.line(r));
        out.push('\n');
    }
    if !rows.is_empty() {
        out.push_str(&rule);
        out.push('\n');
    }
    out
}

/// What a command concluded about the data it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No problem found.
    Clean,
    /// A data problem was found and reported.
    Problem,
}

impl Verdict {
    /// The process exit code for this verdict.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Clean => EXIT_OK,
            Verdict::Problem => EXIT_DATA_PROBLEM,
        }
    }
}

/// Buffered stdout.
pub struct Out {
    w: BufWriter<Stdout>,
}

/// Marker error: the reader of our stdout went away.
#[derive(Debug)]
pub struct PipeClosed;

impl std::fmt::Display for PipeClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("output pipe closed")
    }
}
impl std::error::Error for PipeClosed {}

fn map_io(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(PipeClosed)
    } else {
        anyhow::Error::new(e).context("writing to stdout")
    }
}

impl Out {
    /// Stdout with a large buffer (dumps stream millions of lines).
    pub fn new() -> Self {
        Out {
            w: BufWriter::with_capacity(1 << 16, io::stdout()),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, s: &str) -> anyhow::Result<()> {
        self.w.write_all(s.as_bytes()).map_err(map_io)?;
        self.w.write_all(b"\n").map_err(map_io)
    }

    /// Writes one JSON value as a line.
    pub fn json(&mut self, v: &serde_json::Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.w, v).map_err(|e| map_io(e.into()))?;
        self.w.write_all(b"\n").map_err(map_io)
    }

    /// Writes pre-rendered bytes followed by a newline.
    pub fn raw_line(&mut self, b: &[u8]) -> anyhow::Result<()> {
        self.w.write_all(b).map_err(map_io)?;
        self.w.write_all(b"\n").map_err(map_io)
    }

    /// Flushes.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.w.flush().map_err(map_io)
    }
}

/// Left-aligns a table: every column padded to its widest cell.
pub fn table(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let pad = widths[c] + 2 - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod bordered_tests {
    use super::bordered_table as table;

    #[test]
    fn tables_pad_every_column_to_its_widest_cell() {
        let t = table(
            &["KIND", "KEY"],
            &[
                vec!["key_missing".into(), "/a".into()],
                vec!["x".into(), "/längere".into()],
            ],
        );
        assert_eq!(
            t,
            "+-------------+----------+\n\
             | KIND        | KEY      |\n\
             +-------------+----------+\n\
             | key_missing | /a       |\n\
             | x           | /längere |\n\
             +-------------+----------+\n"
        );
    }
}
