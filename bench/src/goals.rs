//! Goals as machine-readable rules (`bench/goals.json`) and their verdicts, computed from the
//! rounds of one `compare`.
//!
//! A goal names a **subject** cell (suite id, workload, server), a **metric** of it, a
//! comparison and a **baseline**: another server's cell (by default in the same workload)
//! scaled by a factor, or a fixed value. "ringman <= 1.0 x tokio" in P13's 16 KiB cell reads:
//! ringman's server CPU per message is at most tokio's.
//!
//! The verdict compares the spreads, not only the medians: each cell's rounds give a range
//! min..max; the baseline's range is scaled by the factor. When the two ranges overlap the
//! rounds cannot tell the two apart and the verdict is **within spread** (the ratio of the
//! medians is shown beside it); otherwise the goal is **met** or **not met** by every round.
//! A cell that did not run (or whose every round failed) gives **not measured**, with the
//! reason.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::summary::{Cell, CellValue, Stat};

/// The goals file in the repository.
pub fn default_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("goals.json")
}

/// What is wrong with a goals file.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GoalsError {
    /// The file could not be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error, as text.
        reason: String,
    },
    /// The file is not JSON.
    #[error("goals file: not JSON: {0}")]
    Json(String),
    /// A required field is absent or of the wrong type.
    #[error("goals file: goal {goal}: field {field:?} {problem}")]
    Field {
        /// The goal's position (1-based) or name.
        goal: String,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An unknown metric.
    #[error("goals file: goal {goal}: unknown metric {metric:?} (server_cpu_us_per_msg, bytes_per_conn, p99_us, msgs_per_s)")]
    Metric {
        /// The goal.
        goal: String,
        /// The metric named.
        metric: String,
    },
    /// An unknown comparison.
    #[error("goals file: goal {goal}: unknown comparison {op:?} (<= or >=)")]
    Comparison {
        /// The goal.
        goal: String,
        /// The comparison named.
        op: String,
    },
}

/// The figure a goal judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Server CPU µs per message (request, delivery, handshake): the suite's main figure.
    ServerCpu,
    /// P5: server RSS bytes per idle connection.
    BytesPerConn,
    /// p99 latency, µs.
    P99,
    /// Messages per second.
    Rate,
}

impl Metric {
    /// Name in the goals file.
    pub fn name(self) -> &'static str {
        match self {
            Metric::ServerCpu => "server_cpu_us_per_msg",
            Metric::BytesPerConn => "bytes_per_conn",
            Metric::P99 => "p99_us",
            Metric::Rate => "msgs_per_s",
        }
    }

    /// Parses a name of the goals file.
    pub fn parse(s: &str) -> Option<Metric> {
        [Metric::ServerCpu, Metric::BytesPerConn, Metric::P99, Metric::Rate].into_iter().find(|m| m.name() == s)
    }

    /// Unit for the tables.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::ServerCpu => "µs/msg",
            Metric::BytesPerConn => "B/conn",
            Metric::P99 => "µs",
            Metric::Rate => "msgs/s",
        }
    }

    /// The figure of a cell, over its rounds.
    pub fn of(self, cell: &Cell) -> Option<Stat> {
        match (&cell.value, self) {
            (CellValue::Load { srv_us, .. }, Metric::ServerCpu) => *srv_us,
            (CellValue::Load { p99, .. }, Metric::P99) => Some(*p99),
            (CellValue::Load { rate, .. }, Metric::Rate) => Some(*rate),
            (CellValue::Idle { per_conn, .. }, Metric::BytesPerConn) => Some(*per_conn),
            _ => None,
        }
    }
}

/// How the subject must relate to the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// At most (CPU, memory, latency).
    AtMost,
    /// At least (throughput).
    AtLeast,
}

impl Comparison {
    /// `<=` or `>=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::AtMost => "<=",
            Comparison::AtLeast => ">=",
        }
    }
}

/// A cell of the suite: id, workload (None: the id's only workload), server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellRef {
    /// Suite id (`P13`).
    pub id: String,
    /// Workload (`echo 16384B c16 d2`); None when the id has one workload.
    pub workload: Option<String>,
    /// Server (`ringman`).
    pub server: String,
}

impl CellRef {
    /// The cell among `cells` (the only one of the id and server when no workload is named).
    pub fn find<'a>(&self, cells: &'a [Cell]) -> Option<&'a Cell> {
        let mut it = cells.iter().filter(|c| {
            c.id == self.id && c.server == self.server && self.workload.as_ref().is_none_or(|w| *w == c.workload)
        });
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }

    fn label(&self) -> String {
        match &self.workload {
            Some(w) => format!("{} {} {}", self.id, w, self.server),
            None => format!("{} {}", self.id, self.server),
        }
    }
}

/// What the subject is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// Another cell, scaled by `factor`.
    Cell {
        /// The cell.
        cell: CellRef,
        /// The factor: "ringman <= 0.8 x nginx" has 0.8.
        factor: f64,
    },
    /// A fixed value in the metric's unit.
    Value(f64),
}

/// One goal.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// What it says, in words.
    pub name: String,
    /// The figure.
    pub metric: Metric,
    /// The cell judged.
    pub subject: CellRef,
    /// At most / at least.
    pub comparison: Comparison,
    /// What it is compared with.
    pub baseline: Baseline,
}

impl Goal {
    /// The rule in a few words: `ringman <= 1.00 x tokio`.
    pub fn rule(&self) -> String {
        match &self.baseline {
            Baseline::Cell { cell, factor } => {
                let elsewhere = if cell.id != self.subject.id || cell.workload != self.subject.workload {
                    format!(" ({})", cell.label())
                } else {
                    String::new()
                };
                format!("{} {} {factor:.2} x {}{elsewhere}", self.subject.server, self.comparison.symbol(), cell.server)
            }
            Baseline::Value(v) => {
                format!("{} {} {v} {}", self.subject.server, self.comparison.symbol(), self.metric.unit())
            }
        }
    }
}

/// A goal the harness cannot judge from one run, and why (listed under the verdicts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotJudged {
    /// The goal.
    pub name: String,
    /// Why one `compare` cannot judge it.
    pub why: String,
}

/// The goals file.
#[derive(Debug, Clone, PartialEq)]
pub struct Goals {
    /// The goals the harness judges.
    pub goals: Vec<Goal>,
    /// The goals it does not, with the reason.
    pub not_judged: Vec<NotJudged>,
}

fn field_str<'a>(
    v: &'a serde_json::Value,
    goal: &str,
    field: &'static str,
    required: bool,
) -> Result<Option<&'a str>, GoalsError> {
    match v.get(field) {
        None if !required => Ok(None),
        None => Err(GoalsError::Field { goal: goal.into(), field, problem: "is missing" }),
        Some(x) => {
            x.as_str().map(Some).ok_or(GoalsError::Field { goal: goal.into(), field, problem: "is not a string" })
        }
    }
}

fn cell_ref(v: &serde_json::Value, goal: &str, default: Option<&CellRef>) -> Result<CellRef, GoalsError> {
    let server = field_str(v, goal, "server", true)?.unwrap_or_default().to_string();
    let id = match (field_str(v, goal, "cell", default.is_none())?, default) {
        (Some(id), _) => id.to_string(),
        (None, Some(d)) => d.id.clone(),
        (None, None) => unreachable!("a required field is present"),
    };
    let workload = match field_str(v, goal, "workload", false)? {
        Some(w) => Some(w.to_string()),
        // Another cell id's workload is never the subject's.
        None => default.filter(|d| d.id == id).and_then(|d| d.workload.clone()),
    };
    Ok(CellRef { id, workload, server })
}

impl Goals {
    /// Parses the text of a goals file.
    pub fn parse(text: &str) -> Result<Goals, GoalsError> {
        let root: serde_json::Value = serde_json::from_str(text).map_err(|e| GoalsError::Json(e.to_string()))?;
        let list = root.get("goals").and_then(|g| g.as_array()).ok_or(GoalsError::Field {
            goal: "(file)".into(),
            field: "goals",
            problem: "is not an array",
        })?;
        let mut goals = Vec::with_capacity(list.len());
        for (i, g) in list.iter().enumerate() {
            let pos = format!("#{}", i + 1);
            let name = field_str(g, &pos, "name", true)?.unwrap_or_default().to_string();
            let who = format!("#{} ({name})", i + 1);
            let metric_name = field_str(g, &who, "metric", true)?.unwrap_or_default();
            let metric = Metric::parse(metric_name)
                .ok_or_else(|| GoalsError::Metric { goal: who.clone(), metric: metric_name.into() })?;
            let subject_v = g.get("subject").ok_or(GoalsError::Field {
                goal: who.clone(),
                field: "subject",
                problem: "is missing",
            })?;
            let subject = cell_ref(subject_v, &who, None)?;
            let op = field_str(g, &who, "compare", true)?.unwrap_or_default();
            let comparison = match op {
                "<=" => Comparison::AtMost,
                ">=" => Comparison::AtLeast,
                _ => return Err(GoalsError::Comparison { goal: who, op: op.into() }),
            };
            let base_v = g.get("baseline").ok_or(GoalsError::Field {
                goal: who.clone(),
                field: "baseline",
                problem: "is missing",
            })?;
            let baseline = match base_v.get("value") {
                Some(v) => Baseline::Value(v.as_f64().ok_or(GoalsError::Field {
                    goal: who.clone(),
                    field: "value",
                    problem: "is not a number",
                })?),
                None => {
                    let factor = match g.get("factor") {
                        None => 1.0,
                        Some(f) => f.as_f64().filter(|f| *f > 0.0).ok_or(GoalsError::Field {
                            goal: who.clone(),
                            field: "factor",
                            problem: "is not a positive number",
                        })?,
                    };
                    Baseline::Cell { cell: cell_ref(base_v, &who, Some(&subject))?, factor }
                }
            };
            goals.push(Goal { name, metric, subject, comparison, baseline });
        }
        let mut not_judged = Vec::new();
        for (i, n) in root.get("not_judged").and_then(|n| n.as_array()).into_iter().flatten().enumerate() {
            let pos = format!("not_judged #{}", i + 1);
            not_judged.push(NotJudged {
                name: field_str(n, &pos, "name", true)?.unwrap_or_default().to_string(),
                why: field_str(n, &pos, "why", true)?.unwrap_or_default().to_string(),
            });
        }
        Ok(Goals { goals, not_judged })
    }

    /// Reads and parses a goals file.
    pub fn load(path: &Path) -> Result<Goals, GoalsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GoalsError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
        Goals::parse(&text)
    }
}

/// The outcome of one goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every round of the subject is on the right side of every (scaled) round of the
    /// baseline.
    Met,
    /// Every round is on the wrong side.
    NotMet,
    /// The ranges overlap: these rounds cannot tell.
    WithinSpread,
    /// A cell is missing, with the reason.
    NotMeasured(String),
}

impl Verdict {
    /// The words of the verdict table.
    pub fn text(&self) -> String {
        match self {
            Verdict::Met => "met".into(),
            Verdict::NotMet => "not met".into(),
            Verdict::WithinSpread => "within spread".into(),
            Verdict::NotMeasured(why) => format!("not measured ({why})"),
        }
    }
}

/// The verdict of `subject` against `target` (the baseline's range already scaled by the
/// factor): overlapping ranges are within spread, otherwise the side decides.
pub fn verdict(subject: &Stat, target: &Stat, comparison: Comparison) -> Verdict {
    if subject.min <= target.max && target.min <= subject.max {
        return Verdict::WithinSpread;
    }
    let below = subject.max < target.min;
    match (comparison, below) {
        (Comparison::AtMost, true) | (Comparison::AtLeast, false) => Verdict::Met,
        _ => Verdict::NotMet,
    }
}

/// A judged goal.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The goal.
    pub goal: Goal,
    /// The subject's figure over its rounds.
    pub subject: Option<Stat>,
    /// The baseline's figure over its rounds (unscaled), or the fixed value.
    pub baseline: Option<Stat>,
    /// The baseline scaled by the factor: what the subject is held to.
    pub target: Option<Stat>,
    /// The verdict.
    pub verdict: Verdict,
}

impl Judged {
    /// The subject's median over the baseline's (unscaled): `0.93` for 0.93 x tokio.
    pub fn ratio(&self) -> Option<f64> {
        match (&self.subject, &self.baseline) {
            (Some(s), Some(b)) if b.median != 0.0 => Some(s.median / b.median),
            _ => None,
        }
    }
}

fn cell_figure(r: &CellRef, metric: Metric, cells: &[Cell]) -> Result<Stat, String> {
    let Some(cell) = r.find(cells) else {
        return Err(format!("{} did not run", r.label()));
    };
    if let CellValue::Skipped(why) = &cell.value {
        let why: String = why.chars().take(80).collect();
        return Err(format!("{}: {why}", r.label()));
    }
    metric.of(cell).ok_or_else(|| format!("{} has no {}", r.label(), metric.name()))
}

/// Judges `goal` on the cells of one run.
pub fn judge(goal: &Goal, cells: &[Cell]) -> Judged {
    let subject = cell_figure(&goal.subject, goal.metric, cells);
    let baseline = match &goal.baseline {
        Baseline::Cell { cell, factor } => cell_figure(cell, goal.metric, cells).map(|b| {
            let target = Stat { median: b.median * factor, min: b.min * factor, max: b.max * factor };
            (b, target)
        }),
        Baseline::Value(v) => {
            let s = Stat { median: *v, min: *v, max: *v };
            Ok((s, s))
        }
    };
    let verdict = match (&subject, &baseline) {
        (Ok(s), Ok((_, t))) => verdict(s, t, goal.comparison),
        (Err(why), _) | (_, Err(why)) => Verdict::NotMeasured(why.clone()),
    };
    Judged {
        goal: goal.clone(),
        subject: subject.ok(),
        baseline: baseline.as_ref().ok().map(|b| b.0),
        target: baseline.ok().map(|b| b.1),
        verdict,
    }
}

/// Judges every goal.
pub fn judge_all(goals: &Goals, cells: &[Cell]) -> Vec<Judged> {
    goals.goals.iter().map(|g| judge(g, cells)).collect()
}

fn range(s: &Option<Stat>) -> String {
    let fmt = |v: f64| {
        if v.abs() >= 100.0 {
            format!("{v:.0}")
        } else if v.abs() >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    };
    s.map_or_else(|| "-".into(), |s| format!("{} [{}..{}]", fmt(s.median), fmt(s.min), fmt(s.max)))
}

/// The verdicts as a markdown table (`RESULTS.md`), then the goals not judged.
pub fn markdown(judged: &[Judged], not_judged: &[NotJudged]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| goal | cell | rule | subject | baseline x factor | ratio of medians | verdict |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for j in judged {
        let g = &j.goal;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} {} | {} | {} | **{}** |",
            g.name,
            g.subject.label(),
            g.rule(),
            range(&j.subject),
            g.metric.unit(),
            range(&j.target),
            j.ratio().map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
            j.verdict.text()
        );
    }
    if !not_judged.is_empty() {
        let _ = writeln!(s, "\nNot judged from one run:\n");
        for n in not_judged {
            let _ = writeln!(s, "- {}: {}", n.name, n.why);
        }
    }
    s
}

/// The verdicts as plain lines (the end of `compare`'s output).
pub fn text(judged: &[Judged]) -> String {
    let mut s = String::from("goals (bench/goals.json): subject median [min..max] vs baseline x factor\n");
    for j in judged {
        let _ = writeln!(
            s,
            "  {:<72} {:<30} {} vs {}  -> {}",
            j.goal.name,
            j.goal.rule(),
            range(&j.subject),
            range(&j.target),
            j.verdict.text()
        );
    }
    s
}

/// The verdicts as a JSON array (`compare.json`).
pub fn json(judged: &[Judged]) -> String {
    use crate::report::{json_num, json_str};
    let stat = |s: &Option<Stat>| {
        s.map_or_else(
            || "null".into(),
            |s| {
                format!(
                    "{{\"median\": {}, \"min\": {}, \"max\": {}}}",
                    json_num(s.median),
                    json_num(s.min),
                    json_num(s.max)
                )
            },
        )
    };
    let items: Vec<String> = judged
        .iter()
        .map(|j| {
            format!(
                "{{\"name\": {}, \"rule\": {}, \"metric\": {}, \"subject\": {}, \"baseline\": {}, \"target\": {}, \"verdict\": {}}}",
                json_str(&j.goal.name),
                json_str(&j.goal.rule()),
                json_str(j.goal.metric.name()),
                stat(&j.subject),
                stat(&j.baseline),
                stat(&j.target),
                json_str(&j.verdict.text())
            )
        })
        .collect();
    format!("[{}]", items.join(",\n    "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Outcome, Record};

    fn st(median: f64, min: f64, max: f64) -> Stat {
        Stat { median, min, max }
    }

    #[test]
    fn verdicts_from_the_spreads() {
        use Comparison::*;
        // Entirely below the target: met for "at most", not met for "at least".
        assert_eq!(verdict(&st(4.0, 3.9, 4.1), &st(5.0, 4.8, 5.3), AtMost), Verdict::Met);
        assert_eq!(verdict(&st(4.0, 3.9, 4.1), &st(5.0, 4.8, 5.3), AtLeast), Verdict::NotMet);
        // Entirely above.
        assert_eq!(verdict(&st(6.0, 5.5, 6.2), &st(5.0, 4.8, 5.3), AtMost), Verdict::NotMet);
        assert_eq!(verdict(&st(6.0, 5.5, 6.2), &st(5.0, 4.8, 5.3), AtLeast), Verdict::Met);
        // Overlapping ranges, whatever the medians say: within spread.
        assert_eq!(verdict(&st(4.9, 4.0, 5.0), &st(5.0, 4.8, 5.3), AtMost), Verdict::WithinSpread);
        assert_eq!(verdict(&st(5.2, 5.1, 6.0), &st(5.0, 4.8, 5.3), AtMost), Verdict::WithinSpread);
        // Touching counts as overlapping; one range inside the other too.
        assert_eq!(verdict(&st(4.5, 4.0, 4.8), &st(5.0, 4.8, 5.3), AtMost), Verdict::WithinSpread);
        assert_eq!(verdict(&st(5.0, 4.0, 6.0), &st(5.0, 4.9, 5.1), AtLeast), Verdict::WithinSpread);
        // A single round each: exact values.
        assert_eq!(verdict(&st(3.0, 3.0, 3.0), &st(3.0, 3.0, 3.0), AtMost), Verdict::WithinSpread);
        assert_eq!(verdict(&st(2.9, 2.9, 2.9), &st(3.0, 3.0, 3.0), AtMost), Verdict::Met);
    }

    const FILE: &str = r#"{
      "about": "test",
      "goals": [
        {"name": "bulk 16 KiB vs tokio", "metric": "server_cpu_us_per_msg",
         "subject": {"cell": "P13", "workload": "echo 16384B c16 d2", "server": "ringman"},
         "compare": "<=", "factor": 1.0, "baseline": {"server": "tokio"}},
        {"name": "files vs nginx", "metric": "server_cpu_us_per_msg",
         "subject": {"cell": "P14", "workload": "http file 30000B c32 d1", "server": "ringman"},
         "compare": "<=", "factor": 0.8, "baseline": {"server": "nginx"}},
        {"name": "fall-through", "metric": "server_cpu_us_per_msg",
         "subject": {"cell": "P15", "server": "ringman-web"},
         "compare": "<=", "factor": 1.05, "baseline": {"server": "ringman"}},
        {"name": "idle memory", "metric": "bytes_per_conn",
         "subject": {"cell": "P5", "server": "ringman"}, "compare": "<=", "baseline": {"value": 1024}},
        {"name": "across cells", "metric": "msgs_per_s",
         "subject": {"cell": "P1", "server": "ringman"}, "compare": ">=", "factor": 2,
         "baseline": {"cell": "P2", "server": "ringman"}}
      ],
      "not_judged": [{"name": "no regression", "why": "needs two runs"}]
    }"#;

    #[test]
    fn parses_the_goals_file() {
        let g = Goals::parse(FILE).unwrap();
        assert_eq!(g.goals.len(), 5);
        let bulk = &g.goals[0];
        assert_eq!(bulk.metric, Metric::ServerCpu);
        assert_eq!(bulk.comparison, Comparison::AtMost);
        assert_eq!(
            bulk.baseline,
            Baseline::Cell {
                cell: CellRef { id: "P13".into(), workload: Some("echo 16384B c16 d2".into()), server: "tokio".into() },
                factor: 1.0
            }
        );
        assert_eq!(bulk.rule(), "ringman <= 1.00 x tokio");
        assert_eq!(g.goals[1].rule(), "ringman <= 0.80 x nginx");
        assert_eq!(g.goals[2].subject.workload, None);
        assert_eq!(g.goals[3].baseline, Baseline::Value(1024.0));
        assert_eq!(g.goals[3].rule(), "ringman <= 1024 B/conn");
        // A baseline in another cell does not inherit the subject's workload.
        let Baseline::Cell { cell, factor } = &g.goals[4].baseline else { panic!() };
        assert_eq!((cell.id.as_str(), cell.workload.as_ref(), *factor), ("P2", None, 2.0));
        assert_eq!(g.goals[4].rule(), "ringman >= 2.00 x ringman (P2 ringman)");
        assert_eq!(g.not_judged, [NotJudged { name: "no regression".into(), why: "needs two runs".into() }]);
    }

    #[test]
    fn bad_goals_files_are_refused_with_the_reason() {
        assert!(matches!(Goals::parse("{"), Err(GoalsError::Json(_))));
        assert!(matches!(Goals::parse("{}"), Err(GoalsError::Field { field: "goals", .. })));
        let one = |g: &str| Goals::parse(&format!("{{\"goals\": [{g}]}}"));
        let base = r#""name": "n", "subject": {"cell": "P1", "server": "ringman"}, "baseline": {"server": "floor"}"#;
        let e = one(&format!(r#"{{{base}, "metric": "cpu", "compare": "<="}}"#)).unwrap_err();
        assert!(matches!(&e, GoalsError::Metric { metric, .. } if metric == "cpu"), "{e}");
        let e = one(&format!(r#"{{{base}, "metric": "p99_us", "compare": "<"}}"#)).unwrap_err();
        assert!(matches!(e, GoalsError::Comparison { .. }), "{e}");
        let e = one(&format!(r#"{{{base}, "metric": "p99_us", "compare": "<=", "factor": -1}}"#)).unwrap_err();
        assert!(matches!(e, GoalsError::Field { field: "factor", .. }), "{e}");
        let e = one(r#"{"name": "n", "metric": "p99_us", "compare": "<=", "subject": {"server": "ringman"}, "baseline": {"value": 1}}"#)
            .unwrap_err();
        assert!(matches!(e, GoalsError::Field { field: "cell", .. }), "{e}");
        assert!(e.to_string().contains("#1 (n)"), "{e}");
        let e = one(r#"{"metric": "p99_us"}"#).unwrap_err();
        assert!(matches!(e, GoalsError::Field { field: "name", .. }), "{e}");
        assert!(matches!(Goals::load(Path::new("/nonexistent/goals.json")), Err(GoalsError::Read { .. })));
    }

    fn rec(id: &str, workload: &str, server: &str, round: usize, srv: f64) -> Record {
        Record {
            id: id.into(),
            workload: workload.into(),
            server: server.into(),
            round,
            outcome: Outcome::Done(crate::testutil::figures(1000.0, srv, 0.0, 0.0)),
        }
    }

    #[test]
    fn judges_cells_of_a_run() {
        let w = "echo 16384B c16 d2";
        let mut rs = Vec::new();
        for (round, (r, t)) in [(4.0, 5.0), (4.2, 5.5), (4.1, 5.2)].into_iter().enumerate() {
            rs.push(rec("P13", w, "ringman", round, r));
            rs.push(rec("P13", w, "tokio", round, t));
            // nginx 5.0..5.4 x 0.8 = 4.0..4.32: overlaps ringman's 4.0..4.2.
            rs.push(rec("P14", "http file 30000B c32 d1", "nginx", round, 5.0 + 0.2 * round as f64));
            rs.push(rec("P14", "http file 30000B c32 d1", "ringman", round, r));
            rs.push(rec("P15", "http c64 d1", "ringman", round, 3.0));
            rs.push(rec("P15", "http c64 d1", "ringman-web", round, 3.3));
        }
        rs.push(Record {
            id: "P5".into(),
            workload: "idle slope 2000->10000".into(),
            server: "ringman".into(),
            round: 0,
            outcome: Outcome::Skipped("server exited".into()),
        });
        let cells = crate::summary::cells(&rs);
        let goals = Goals::parse(FILE).unwrap();
        let j = judge_all(&goals, &cells);
        assert_eq!(j[0].verdict, Verdict::Met, "{:?}", j[0]);
        assert_eq!(j[0].subject, Some(st(4.1, 4.0, 4.2)));
        assert_eq!(j[0].target, Some(st(5.2, 5.0, 5.5)));
        assert!((j[0].ratio().unwrap() - 4.1 / 5.2).abs() < 1e-12);
        assert_eq!(j[1].verdict, Verdict::WithinSpread, "{:?}", j[1]);
        // 3.3 > 1.05 x 3.0 in every round.
        assert_eq!(j[2].verdict, Verdict::NotMet, "{:?}", j[2]);
        assert_eq!(j[3].verdict, Verdict::NotMeasured("P5 ringman: server exited".into()));
        assert_eq!(j[4].verdict, Verdict::NotMeasured("P1 ringman did not run".into()));
        let md = markdown(&j, &goals.not_judged);
        assert!(md.contains("| bulk 16 KiB vs tokio | P13 echo 16384B c16 d2 ringman | ringman <= 1.00 x tokio | 4.10 [4.00..4.20] µs/msg | 5.20 [5.00..5.50] | 0.79x | **met** |"), "{md}");
        assert!(md.contains("**within spread**") && md.contains("**not met**"), "{md}");
        assert!(md.contains("- no regression: needs two runs"), "{md}");
        let t = text(&j);
        assert!(t.lines().count() == 6 && t.contains("-> not measured (P1 ringman did not run)"), "{t}");
        let js = json(&j);
        assert!(js.contains("\"verdict\": \"met\"") && js.contains("\"target\": null"), "{js}");
        assert_eq!(js.matches('{').count(), js.matches('}').count());
    }

    #[test]
    fn a_cell_ref_without_workload_needs_a_single_workload() {
        let rs = vec![rec("P3", "http c256 d16", "ringman", 0, 1.0), rec("P3", "http c256 d1", "ringman", 0, 2.0)];
        let cells = crate::summary::cells(&rs);
        let any = CellRef { id: "P3".into(), workload: None, server: "ringman".into() };
        assert_eq!(any.find(&cells), None);
        let one = CellRef { workload: Some("http c256 d1".into()), ..any };
        assert_eq!(one.find(&cells).map(|c| c.workload.as_str()), Some("http c256 d1"));
    }
}
