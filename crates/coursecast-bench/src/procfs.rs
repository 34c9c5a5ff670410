//! What `/proc` says about the generator and the server: CPU time, resident memory,
//! load, the machine's steal time; and the file-descriptor limit the generator raises
//! for itself.

use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (soft, hard) after.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    rlimit::Resource::NOFILE.set(hard, hard)?;
    rlimit::Resource::NOFILE.get()
}

fn stat_path(pid: Option<u32>) -> String {
    pid.map_or_else(|| "/proc/self/stat".to_owned(), |pid| format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds of a process (`None`: this process).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path(pid)).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / TICKS_PER_SEC)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field N is at index N - 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory of a process, KiB (`None`: this process).
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(|| "/proc/self/status".to_owned(), |pid| format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Steal and total ticks of the whole machine (`/proc/stat`).
fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal,
/// then guest time, which `user` and `nice` already include.
fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    Some((*ticks.get(7)?, ticks.iter().sum()))
}

/// CPU use of the generator and the server (one process, or the nodes of a cluster)
/// over a stretch of wall time.
#[derive(Clone)]
pub struct CpuMeter {
    started: Instant,
    own: Option<f64>,
    /// Each server process and its CPU seconds at the start.
    servers: Vec<(u32, Option<f64>)>,
    machine: Option<(u64, u64)>,
}

/// What a [`CpuMeter`] measured: the generator's and the server's CPU in percent of
/// one core (200 = both cores of this machine busy; several server processes are
/// added up); steal in percent of the whole machine's CPU time.
#[derive(Debug, Clone, Copy, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CpuUse {
    pub generator_pct: Option<f64>,
    pub server_pct: Option<f64>,
    /// Time this machine's CPUs wanted to run but the hypervisor ran other guests:
    /// how much of a run's noise came from outside it.
    pub steal_pct: Option<f64>,
}

impl CpuMeter {
    pub fn start(server_pids: &[u32]) -> Self {
        Self {
            started: Instant::now(),
            own: cpu_seconds(None),
            servers: server_pids.iter().map(|&pid| (pid, cpu_seconds(Some(pid)))).collect(),
            machine: machine_ticks(),
        }
    }

    pub fn read(&self) -> CpuUse {
        self.read_each().0
    }

    /// The same, and each server process's CPU in the order of [`CpuMeter::start`]'s pids.
    pub fn read_each(&self) -> (CpuUse, Vec<Option<f64>>) {
        let wall = self.started.elapsed().as_secs_f64().max(1e-6);
        let pct = |before: Option<f64>, now: Option<f64>| match (before, now) {
            (Some(b), Some(n)) => Some(((n - b) / wall * 1000.0).round() / 10.0),
            _ => None,
        };
        let each: Vec<Option<f64>> =
            self.servers.iter().map(|&(pid, before)| pct(before, cpu_seconds(Some(pid)))).collect();
        // No server, or one that could not be read: no total rather than a part of one.
        let server_pct = match each.iter().copied().collect::<Option<Vec<f64>>>() {
            Some(all) if !all.is_empty() => Some((all.iter().sum::<f64>() * 10.0).round() / 10.0),
            _ => None,
        };
        let cpu = CpuUse {
            generator_pct: pct(self.own, cpu_seconds(None)),
            server_pct,
            steal_pct: steal_pct(self.machine, machine_ticks()),
        };
        (cpu, each)
    }
}

/// Server CPU µs per unit of work (a copy delivered, ...), from its CPU in percent of
/// a core over `secs` of wall time; none without a figure or without work.
pub fn cpu_us_per(cpu_pct: Option<f64>, secs: f64, count: u64) -> Option<f64> {
    let us = cpu_pct? / 100.0 * secs * 1e6;
    (count > 0).then(|| (us / count as f64 * 100.0).round() / 100.0)
}

/// Steal as a percent of all ticks between two `/proc/stat` readings.
fn steal_pct(before: Option<(u64, u64)>, now: Option<(u64, u64)>) -> Option<f64> {
    let ((steal0, total0), (steal1, total1)) = (before?, now?);
    let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
    let steal = steal1.checked_sub(steal0)?;
    Some((steal as f64 / total as f64 * 1000.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_spaces_in_the_name() {
        let line = "4242 (tokio runtime) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_cpu_ticks(line), Some(325));
    }

    #[test]
    fn steal_is_a_share_of_all_the_machines_ticks() {
        let at =
            |steal: u64, busy: u64| format!("cpu  {busy} 0 10 500 0 0 0 {steal} 40 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n");
        let before = parse_machine_ticks(&at(20, 100));
        assert_eq!(before, Some((20, 630)));
        // 1,000 more ticks, 170 of them stolen (guest time is not counted twice).
        assert_eq!(steal_pct(before, parse_machine_ticks(&at(190, 930))), Some(17.0));
        assert_eq!(steal_pct(before, before), None, "no time passed");
        assert!(machine_ticks().is_some());
    }

    #[test]
    fn cpu_per_unit_of_work() {
        assert_eq!(cpu_us_per(Some(50.0), 2.0, 100_000), Some(10.0));
        assert_eq!(cpu_us_per(Some(50.0), 2.0, 0), None);
        assert_eq!(cpu_us_per(None, 2.0, 10), None);
    }

    #[test]
    fn several_servers_add_up_and_an_unreadable_one_leaves_no_total() {
        let me = std::process::id();
        let (cpu, each) = CpuMeter::start(&[me, me]).read_each();
        assert_eq!(each.len(), 2);
        assert!(cpu.server_pct.is_some());
        // Pids above the kernel's pid_max (2^22) never exist.
        let (cpu, each) = CpuMeter::start(&[me, 1 << 23]).read_each();
        assert_eq!((cpu.server_pct, each[1]), (None, None));
        assert_eq!(CpuMeter::start(&[]).read().server_pct, None);
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds(None).is_some());
        assert!(rss_kib(None).unwrap_or(0) > 0);
        assert!(loadavg().is_some());
    }
}
