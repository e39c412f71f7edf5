//! Plain-text tables for terminal output: columns padded to their widest cell. Cells often hold
//! text read from Redis (task errors, outputs, module and schedule names), so each is rendered on
//! one line with its control characters escaped: a cell can neither drive the terminal nor start a
//! line of its own.

pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(|c| wasmq::text::escape_control(&c, false).into_owned()).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> =
                r.iter().enumerate().take(cols).map(|(i, c)| if i + 1 == cols { c.clone() } else { format!("{c:<w$}", w = width[i]) }).collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}
