//! CPU time as Linux's `/proc` counts it: the whole machine's busy time, PostgreSQL's processes',
//! the Apache Pulsar broker's and the bench's own, so that what a load cost can be divided by the
//! sagas it completed.

use super::{Figure, Point};
use serde::Serialize;
use std::path::Path;

/// Clock ticks per second in `/proc` (USER_HZ: 100 on every Linux architecture this runs on).
const TICKS: f64 = 100.0;

/// CPU seconds spent up to a moment, or between two.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cpu {
    pub machine: f64,
    pub postgres: f64,
    /// The Apache Pulsar JVM the bench's platform started.
    pub broker: f64,
    /// The bench process itself: the load generator and the log follower.
    pub bench: f64,
}

impl Cpu {
    /// Now, with the broker's process `broker`; `None` where `/proc` cannot be read (not Linux).
    pub fn now(broker: Option<u32>) -> Option<Cpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu user nice system idle iowait irq softirq steal …: busy is all but idle and iowait.
        let ticks: Vec<f64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|t| t.parse().unwrap_or(0.0))
            .collect();
        let busy = ticks.iter().sum::<f64>() - ticks.get(3)? - ticks.get(4)?;
        let mut postgres = 0.0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            if let Some(("postgres", time)) = process_time(&entry.path()) {
                postgres += time;
            }
        }
        Some(Cpu {
            machine: busy / TICKS,
            postgres,
            broker: broker
                .and_then(|pid| process_time(&Path::new("/proc").join(pid.to_string())))
                .map_or(0.0, |(_, time)| time),
            bench: process_time(Path::new("/proc/self")).map_or(0.0, |(_, time)| time),
        })
    }

    /// What was spent from `earlier` to `self`.
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            machine: self.machine - earlier.machine,
            postgres: self.postgres - earlier.postgres,
            broker: self.broker - earlier.broker,
            bench: self.bench - earlier.bench,
        }
    }
}

/// A process's command name and CPU seconds, its waited-for children's included (so that the
/// PostgreSQL server counts the backends that have exited).
fn process_time(process: &Path) -> Option<(&'static str, f64)> {
    let stat = std::fs::read_to_string(process.join("stat")).ok()?;
    let (head, rest) = stat.rsplit_once(") ")?;
    let name = if head.ends_with("(postgres") {
        "postgres"
    } else {
        "other"
    };
    // After the name: state, then fields 4.. ; utime, stime, cutime, cstime are fields 14 to 17.
    let time: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|t| t.parse::<f64>().unwrap_or(0.0))
        .sum();
    Some((name, time / TICKS))
}

/// What a completed saga costs in CPU at the load that completed the most per second, and the
/// rate the machine's cores allow at that cost: the ceiling on sustained sagas/s.
pub(super) fn cpu_figures(curve: &[Point]) -> Vec<Figure> {
    let Some((point, cpu)) = curve
        .iter()
        .filter(|p| p.completed > 0)
        .max_by(|a, b| a.achieved.total_cmp(&b.achieved))
        .and_then(|p| Some((p, p.cpu?)))
    else {
        return Vec::new();
    };
    let per_saga = |seconds: f64| seconds * 1e3 / point.completed as f64;
    let platform = per_saga(cpu.machine - cpu.postgres - cpu.broker - cpu.bench);
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let at = point.offered;
    vec![
        Figure::info(
            format!("CPU per completed saga at {at} sagas/s offered, bench's own excluded"),
            platform + per_saga(cpu.postgres) + per_saga(cpu.broker),
            "ms",
        ),
        Figure::info(
            format!("of which PostgreSQL, at {at} sagas/s offered"),
            per_saga(cpu.postgres),
            "ms",
        ),
        Figure::info(
            format!("of which Apache Pulsar, at {at} sagas/s offered"),
            per_saga(cpu.broker),
            "ms",
        ),
        Figure::info(
            format!("the bench's own load and log follower, at {at} sagas/s offered"),
            per_saga(cpu.bench),
            "ms",
        ),
        Figure::info(
            format!("sagas/s that {cores} cores allow at that CPU per saga"),
            cores * 1e3 / (platform + per_saga(cpu.postgres) + per_saga(cpu.broker)),
            "sagas/s",
        )
        .beside("300 sagas/s goal", 300.0),
    ]
}
