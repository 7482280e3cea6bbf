//! The tables, as Markdown, so they paste into a closing note as they are.

use std::fmt;

use crate::measure::{Run, Stats, SLOW};
use crate::messages::PerRead;
use crate::python::Python;

#[derive(Debug)]
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        let header = header.iter().map(|h| h.to_string()).collect();
        Table { title: title.to_string(), header, rows: Vec::new() }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        writeln!(f, "\n## {}\n", self.title)?;
        writeln!(f, "{}", line(&self.header))?;
        writeln!(f, "|{}", " --- |".repeat(self.header.len()))?;
        for row in &self.rows {
            writeln!(f, "{}", line(row))?;
        }
        Ok(())
    }
}

/// The stats of the case named `name`.
pub fn find<'a>(cases: &'a [(String, Stats)], name: &str) -> &'a Stats {
    &cases.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no case {name}")).1
}

fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

/// The warm reads, against tmpfs and the no-open floor; then `ls -l`, against tmpfs.
pub fn warm(cases: &[(String, Stats)], len: usize, run: &Run) -> (Table, Table) {
    let title = format!(
        "Warm reads: open+read+close of a {len}-byte value, {} rounds of {} interleaved over \
         {:.1} s (means leave out reads over {} ms, counted)",
        run.rounds,
        crate::BATCH,
        run.span.as_secs_f64(),
        SLOW.as_millis()
    );
    let header = [
        "case",
        "median µs",
        "mean µs",
        "slow",
        "median ×tmpfs",
        "median ×no-open floor",
        "mean ×tmpfs",
    ];
    let mut reads = Table::new(&title, &header);
    let (tmpfs, floor) = (find(cases, "tmpfs"), find(cases, "floor no-open"));
    for (name, s) in cases.iter().filter(|(n, _)| !n.starts_with("ls -l")) {
        reads.row([
            name.clone(),
            format!("{:.1}", s.median),
            format!("{:.1}", s.mean),
            s.slow.to_string(),
            ratio(s.median / tmpfs.median),
            ratio(s.median / floor.median),
            ratio(s.mean / tmpfs.mean),
        ]);
    }
    let title = "Warm `ls -l` of a 10-entry directory, same run: readdir + lstat of each entry \
                 (\"ls -l\"), and as GNU ls also asks each entry's SELinux label and ACL (\"GNU ls -l\")";
    let header = ["case", "median µs", "mean µs", "slow", "median ×tmpfs", "mean ×tmpfs"];
    let mut ls = Table::new(title, &header);
    for (name, s) in cases.iter().filter(|(n, _)| n.starts_with("ls -l")) {
        let base = if name.contains("GNU") { "ls -l, GNU, tmpfs" } else { "ls -l, tmpfs" };
        let base = find(cases, base);
        ls.row([
            name.clone(),
            format!("{:.1}", s.median),
            format!("{:.1}", s.mean),
            s.slow.to_string(),
            ratio(s.median / base.median),
            ratio(s.mean / base.mean),
        ]);
    }
    (reads, ls)
}

pub fn cold(cases: &[(String, Stats)]) -> Table {
    let title = format!(
        "Cold reads, {} rounds interleaved (each listed-directory read is of a value never read)",
        crate::cold::COLD_KEYS
    );
    let header = ["case", "median µs", "mean µs", "median ×GET", "median − the daemon's GET, µs"];
    let mut table = Table::new(&title, &header);
    let get = find(cases, "HTTP GET, kept-alive");
    let daemon = find(cases, crate::cold::DAEMON_GET);
    for (name, s) in cases {
        table.row([
            name.clone(),
            format!("{:.1}", s.median),
            format!("{:.1}", s.mean),
            ratio(s.median / get.median),
            format!("{:.1}", s.median - daemon.median),
        ]);
    }
    table
}

pub fn python(py: Option<&Python>) -> Table {
    let title = "Python, medians of 100 rounds of 20 interleaved";
    let mut table = Table::new(title, &["case", "median µs", "`requests` GET ÷ this"]);
    match py {
        Some(py) => {
            for (name, us) in [
                ("open().read(), metadatafs no-open", py.mount),
                ("open().read(), floor no-open", py.floor),
                ("open().read(), tmpfs", py.tmpfs),
                ("requests GET, kept-alive", py.requests),
            ] {
                table.row([name.to_string(), format!("{us:.1}"), ratio(py.requests / us)]);
            }
        }
        None => table.row(["python3 with requests did not run", "", ""]),
    }
    table
}

pub fn https(plain: Stats, mtls: Stats) -> Table {
    let title = format!(
        "Cold read (ttl=0) over plain HTTP and HTTPS with mutual TLS, {} rounds interleaved",
        crate::cold::COLD_KEYS
    );
    let mut table = Table::new(&title, &["transport", "median µs", "median ×HTTP"]);
    table.row(["plain HTTP".to_string(), format!("{:.1}", plain.median), ratio(1.0)]);
    let mtls_ratio = ratio(mtls.median / plain.median);
    table.row(["HTTPS, mutual TLS".to_string(), format!("{:.1}", mtls.median), mtls_ratio]);
    table
}

/// Issue 14's targets, for the default (no-open) path; the open path beside, for reference.
pub fn targets(
    warm: &[(String, Stats)],
    colds: &[(String, Stats)],
    py: Option<&Python>,
    messages: &[(String, [PerRead; 2])],
) -> Table {
    let header = ["target", "no-open (default)", "met", "open path, for reference"];
    let mut table = Table::new("Targets (issue 14)", &header);
    let mut add = |target: String, figures: [f64; 2], ok: bool, unit: &str| {
        let met = if ok { "yes" } else { "**no**" };
        let [a, b] = figures.map(|x| if x.is_nan() { "–".into() } else { format!("{x:.2}{unit}") });
        table.row([target, a, met.to_string(), b]);
    };
    let tmpfs = find(warm, "tmpfs");
    for file in ["value", "access_token", "authorization"] {
        let m = [0, 1].map(|i| find(warm, &format!("{}: {file}", PATHS[i])).median);
        let r = m.map(|x| x / tmpfs.median);
        add(format!("warm {file} ≤ 1.5× tmpfs (medians)"), r, r[0] <= 1.5, "×");
        let per = &messages.iter().find(|(f, _)| f == file).expect("counted").1;
        let n = [per[0].total(), per[1].total()];
        add(format!("warm {file}: 0 FUSE messages per cat"), n, n[0] < 0.0005, "");
    }
    let token = [0, 1].map(|i| find(warm, &format!("{}: token", PATHS[i])).mean / tmpfs.mean);
    add("warm token ≤ 2× tmpfs (means over the span)".into(), token, token[0] <= 2.0, "×");
    for ls in ["ls -l", "ls -l, GNU"] {
        let base = find(warm, &format!("{ls}, tmpfs")).median;
        let r = [0, 1].map(|i| find(warm, &format!("{ls}, {}", PATHS[i])).median / base);
        add(format!("warm {ls} ≤ 2× tmpfs (medians)"), r, r[0] <= 2.0, "×");
    }
    let get = find(colds, "HTTP GET, kept-alive").median;
    let cold =
        [0, 1].map(|i| find(colds, &format!("cold, listed directory ({})", PATHS[i])).median / get);
    add("cold value in a listed directory ≤ 2× GET".into(), cold, cold[0] <= 2.0, "×");
    if let Some(py) = py {
        let r = py.requests / py.mount;
        let target = "Python open().read() ≥ 50× faster than requests GET".to_string();
        add(target, [r, f64::NAN], r >= 50.0, "×");
        // Python's open() asks isatty(): an ioctl every FUSE filesystem is sent, every time.
        let floor = format!("{:.2}×", py.requests / py.floor);
        let target = "the same on the no-open floor, for reference".to_string();
        table.row([target, floor, "–".into(), "–".into()]);
    }
    table
}

/// The two read paths, as the case names say them.
pub const PATHS: [&str; 2] = ["no-open", "open"];
