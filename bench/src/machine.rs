//! The machine around a measurement: whole-machine CPU accounting from `/proc/stat` (busy,
//! steal), `/proc/loadavg`, kernel slab memory, and the build's identity (commit, rustc,
//! kernel). Used to flag measurements that something outside the benchmark disturbed.

use std::time::Duration;

/// Aggregate CPU times of the whole machine (the `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq (excludes idle, iowait, steal; guest time is
    /// already inside user).
    pub busy: Duration,
    /// Time the hypervisor ran something else while this VM wanted to run.
    pub steal: Duration,
    /// Everything (busy + idle + iowait + steal).
    pub total: Duration,
}

impl CpuTimes {
    /// Reads `/proc/stat` now (zero on error).
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        parse_cpu_times(&stat, clk_tck()).unwrap_or_default()
    }

    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            busy: self.busy.saturating_sub(earlier.busy),
            steal: self.steal.saturating_sub(earlier.steal),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// Steal as a share of all CPU time in this interval (0..1).
    pub fn steal_share(&self) -> f64 {
        let t = self.total.as_secs_f64();
        if t > 0.0 {
            self.steal.as_secs_f64() / t
        } else {
            0.0
        }
    }
}

/// Parses the aggregate `cpu` line of `/proc/stat` text (`tck` ticks per second).
pub fn parse_cpu_times(stat: &str, tck: u64) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let f = |i: usize| v.get(i).copied().unwrap_or(0);
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy = f(0) + f(1) + f(2) + f(5) + f(6);
    let total = busy + f(3) + f(4) + f(7);
    let d = |ticks: u64| Duration::from_nanos(ticks * 1_000_000_000 / tck.max(1));
    Some(CpuTimes { busy: d(busy), steal: d(f(7)), total: d(total) })
}

/// CPU time of the machine not explained by the server and the load generator, in cores
/// (busy time over the interval, minus the two, divided by the wall time). Softirq work
/// charged to neither process lands here too, so a loopback run shows a few percent.
pub fn unexplained_cores(busy: Duration, server: Duration, client: Duration, wall: Duration) -> f64 {
    let w = wall.as_secs_f64();
    if w <= 0.0 {
        return 0.0;
    }
    (busy.as_secs_f64() - server.as_secs_f64() - client.as_secs_f64()).max(0.0) / w
}

/// Clock ticks per second of `/proc` times.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The three load averages of `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// `/proc/loadavg` now, as `1.02 0.88 0.75` (or `n/a`).
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    parse_loadavg(&text).map_or_else(|| "n/a".into(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"))
}

/// `Slab:` of `/proc/meminfo` text, in bytes.
pub fn parse_slab(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("Slab:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Kernel slab memory now (bytes; 0 if unreadable).
pub fn slab_bytes() -> u64 {
    parse_slab(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default()).unwrap_or(0)
}

fn command_line(program: &str, args: &[&str], dir: Option<&std::path::Path>) -> Option<String> {
    let mut c = std::process::Command::new(program);
    c.args(args).stderr(std::process::Stdio::null());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let out = c.output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// What was measured, on what: commit, rustc, kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `git rev-parse --short HEAD` of the repository (`+dirty` if the tree has changes).
    pub commit: String,
    /// `git rev-parse HEAD` (`unknown` outside a repository).
    pub head: String,
    /// Whether tracked files differ from HEAD (`git status --porcelain --untracked-files=no`).
    pub dirty: bool,
    /// `rustc --version`.
    pub rustc: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// CPUs online.
    pub cpus: usize,
}

impl Identity {
    /// Collects the identity now (`unknown` where a command is missing).
    pub fn collect() -> Self {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(|p| p.to_path_buf());
        let dirty = command_line("git", &["status", "--porcelain", "--untracked-files=no"], repo.as_deref()).is_some();
        let commit = command_line("git", &["rev-parse", "--short", "HEAD"], repo.as_deref())
            .map(|c| if dirty { format!("{c}+dirty") } else { c })
            .unwrap_or_else(|| "unknown".into());
        let head = command_line("git", &["rev-parse", "HEAD"], repo.as_deref()).unwrap_or_else(|| "unknown".into());
        let rustc = command_line("rustc", &["--version"], None).unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        // Not available_parallelism: that follows this thread's affinity (pinned to one CPU).
        // SAFETY: sysconf has no memory-safety preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
        Identity { commit, head, dirty, rustc, kernel, cpus }
    }
}

/// The machine beyond the identity line, for the results file: CPU model, memory, whether a
/// hypervisor runs it, the open-file limits, the peers' versions.
pub fn facts() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let (soft, hard) = nofile();
    let version = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program).args(args).output().ok();
        out.map(|o| {
            // nginx prints its version on stderr.
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "not installed".into())
    };
    let nginx = crate::server::find_on_path("nginx")
        .map_or_else(|| "not installed".into(), |p| version(&p.to_string_lossy(), &["-v"]));
    vec![
        ("cpu_model", parse_cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into())),
        ("hypervisor", cpuinfo.lines().any(|l| l.starts_with("flags") && l.contains(" hypervisor")).to_string()),
        (
            "mem_total",
            parse_meminfo_kb(&meminfo, "MemTotal").map_or_else(|| "unknown".into(), |k| format!("{} MiB", k / 1024)),
        ),
        ("nofile", format!("soft {soft}, hard {hard}")),
        (
            "io_uring_disabled",
            std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map_or_else(|_| "n/a".into(), |s| s.trim().to_string()),
        ),
        ("nginx", nginx),
        ("redis_server", version("redis-server", &["--version"])),
    ]
}

/// The `model name` of the first CPU in `/proc/cpuinfo`.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// A `/proc/meminfo` field in kB.
pub fn parse_meminfo_kb(meminfo: &str, field: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// This process's `RLIMIT_NOFILE` (soft, hard); the servers it starts inherit it.
pub fn nofile() -> (u64, u64) {
    // SAFETY: an all-zero rlimit is a valid out-parameter.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rlimit; the call only writes it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return (0, 0);
    }
    (lim.rlim_cur as u64, lim.rlim_max as u64)
}

/// Makes sure this process (and so every server it starts from now on) may open `need`
/// descriptors: raises the soft `RLIMIT_NOFILE` up to the hard limit if it is lower. Returns
/// the soft limit now in force, or why it cannot be raised far enough.
pub fn ensure_nofile(need: u64) -> Result<u64, String> {
    let (soft, hard) = nofile();
    if soft >= need {
        return Ok(soft);
    }
    if hard < need {
        return Err(format!(
            "needs {need} open files per process, the hard RLIMIT_NOFILE is {hard} (raise it: ulimit -Hn, or LimitNOFILE)"
        ));
    }
    let lim = libc::rlimit { rlim_cur: hard as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: valid pointer to an rlimit; raising the soft limit up to the hard one needs no
    // privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } < 0 {
        return Err(format!("setrlimit(RLIMIT_NOFILE, {hard}): {}", std::io::Error::last_os_error()));
    }
    Ok(hard)
}

/// A snapshot of the machine's state (at the start or end of a run).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `/proc/loadavg` as text.
    pub loadavg: String,
    /// Aggregate CPU times.
    pub cpu: CpuTimes,
}

impl Snapshot {
    /// Takes a snapshot now.
    pub fn now() -> Self {
        Snapshot { loadavg: loadavg(), cpu: CpuTimes::now() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line() {
        let stat = "cpu  100 10 50 1000 20 5 15 30 7 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        let t = parse_cpu_times(stat, 100).unwrap();
        assert_eq!(t.busy, Duration::from_millis(1800));
        assert_eq!(t.steal, Duration::from_millis(300));
        assert_eq!(t.total, Duration::from_millis(12300));
        let later = CpuTimes { busy: t.busy * 2, steal: t.steal + Duration::from_millis(100), total: t.total * 2 };
        let d = later.since(&t);
        assert_eq!(d.steal, Duration::from_millis(100));
        assert!((d.steal_share() - 0.1 / 12.3).abs() < 1e-9);
        assert_eq!(parse_cpu_times("cpu0 1 2 3 4\n", 100), None);
        assert_eq!(CpuTimes::default().steal_share(), 0.0);
    }

    #[test]
    fn unexplained() {
        let s = Duration::from_secs;
        assert!((unexplained_cores(s(5), s(2), s(2), s(2)) - 0.5).abs() < 1e-9);
        assert_eq!(unexplained_cores(s(3), s(2), s(2), s(2)), 0.0);
        assert_eq!(unexplained_cores(s(3), s(0), s(0), Duration::ZERO), 0.0);
    }

    #[test]
    fn loadavg_and_slab() {
        assert_eq!(parse_loadavg("0.74 1.11 1.52 6/115 14543\n"), Some([0.74, 1.11, 1.52]));
        assert_eq!(parse_loadavg("x"), None);
        assert_eq!(parse_slab("MemTotal: 1 kB\nSlab:             207012 kB\n"), Some(207012 * 1024));
        assert_eq!(parse_slab("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn identity_has_a_kernel() {
        let id = Identity::collect();
        assert!(!id.kernel.is_empty() && id.cpus >= 1);
        assert!(id.head == "unknown" || (id.head.len() == 40 && id.commit.starts_with(&id.head[..7])), "{id:?}");
        assert_eq!(id.dirty, id.commit.ends_with("+dirty"));
    }

    #[test]
    fn cpu_model_memory_and_open_files() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu hypervisor\n";
        assert_eq!(parse_cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(parse_cpu_model("processor: 0\n"), None);
        assert_eq!(parse_meminfo_kb("MemTotal:       24601344 kB\nMemFree: 1 kB\n", "MemTotal"), Some(24601344));
        assert_eq!(parse_meminfo_kb("MemFree: 1 kB\n", "MemTotal"), None);
        let (soft, hard) = nofile();
        assert!(soft >= 1 && soft <= hard, "{soft} {hard}");
        // What is already allowed needs no change; more than the hard limit cannot be had.
        assert_eq!(ensure_nofile(soft.min(64)), Ok(soft));
        if hard < u64::MAX / 2 {
            assert!(ensure_nofile(hard + 1).unwrap_err().contains("hard RLIMIT_NOFILE"));
        }
        let facts = facts();
        assert!(facts.iter().any(|(k, v)| *k == "nofile" && v.contains("hard")), "{facts:?}");
    }
}
