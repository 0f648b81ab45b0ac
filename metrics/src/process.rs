//! The process's own figures, read from `/proc/self` at each scrape: CPU time, resident memory
//! and open file descriptors (this machine's hard limit is 20,000 per process; each WebSocket
//! is one).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/self/stat` (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// Bytes per page of `/proc/self/statm` (4 KiB on the platforms this runs on).
const PAGE_BYTES: i64 = 4096;

/// The collector of `mmsub_process_*`.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// What `/proc/self` says now; `None` where it could not be read (not Linux).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessFigures {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<i64>,
    /// Open file descriptors.
    pub open_fds: Option<i64>,
}

impl ProcessFigures {
    /// Reads them now.
    pub fn now() -> Self {
        Self {
            cpu_seconds: cpu_seconds(),
            resident_bytes: std::fs::read_to_string("/proc/self/statm")
                .ok()
                .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<i64>().ok())
                .map(|pages| pages * PAGE_BYTES),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| i64::try_from(dir.count()).unwrap_or(i64::MAX)),
        }
    }
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces and parentheses).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // utime and stime are fields 14 and 15 of stat(5), the 12th and 13th after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)] // ticks: far below 2^53
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = ProcessFigures::now();
        if let Some(cpu) = now.cpu_seconds {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of this process.",
                None,
                counter.metric_type(),
            )?)?;
        }
        if let Some(rss) = now.resident_bytes {
            let gauge = ConstGauge::new(rss);
            gauge.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of this process.",
                None,
                gauge.metric_type(),
            )?)?;
        }
        if let Some(fds) = now.open_fds {
            let gauge = ConstGauge::new(fds);
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "File descriptors this process holds open (sockets included).",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_memory_and_files() {
        let now = ProcessFigures::now();
        assert!(now.cpu_seconds.is_some_and(|s| s >= 0.0));
        assert!(now.resident_bytes.is_some_and(|b| b > 1 << 20));
        assert!(now.open_fds.is_some_and(|n| n >= 3));
    }
}
