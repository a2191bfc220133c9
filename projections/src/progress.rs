//! Progress of long jobs: a bar on a terminal, plain lines otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Every bar of the process, drawn together (jobs such as verify run
/// several at once).
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// How often plain-line progress is printed.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

/// Reports progress of a job over a known number of units.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    bar: Option<ProgressBar>,
    last_line: Instant,
    quiet: bool,
}

impl Progress {
    /// A reporter on stderr: a bar on a terminal, a line every few seconds
    /// otherwise, nothing when `quiet`.
    pub fn new(label: &str, total: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = BARS
                .get_or_init(MultiProgress::new)
                .add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            bar
        });
        Self {
            label: label.to_string(),
            total,
            done: 0,
            bar,
            last_line: Instant::now(),
            quiet,
        }
    }

    /// Adds `units` done. Past the total (work that grew while the job ran:
    /// events appended during a verify), the total is what was done.
    pub fn advance(&mut self, units: u64) {
        self.done += units;
        if self.done > self.total {
            self.total = self.done;
            if let Some(bar) = &self.bar {
                bar.set_length(self.total);
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        } else if !self.quiet && self.last_line.elapsed() >= LINE_INTERVAL {
            eprintln!("{}: {}/{}", self.label, self.done, self.total);
            self.last_line = Instant::now();
        }
    }

    /// Ends the report.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        } else if !self.quiet {
            eprintln!("{}: {}/{} done", self.label, self.done, self.total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn work_that_grows_past_the_total_raises_it() {
        let mut progress = Progress::new("verify", 258, true);
        progress.advance(200);
        assert_eq!((progress.done, progress.total), (200, 258));
        progress.advance(63);
        assert_eq!((progress.done, progress.total), (263, 263));
    }
}
