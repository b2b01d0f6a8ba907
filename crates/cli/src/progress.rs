//! Progress bars on stderr for long offline work (`wal verify|stats|dump`,
//! `db dump`, `verify`).
//!
//! A bar is drawn only when stderr is a terminal, so scripts, pipes, CI logs
//! and journald see nothing. A command whose stdout is a stream of records
//! (a dump) draws it only when that stream goes elsewhere (a file or a pipe):
//! a bar between dumped lines on the same terminal would garble them. A
//! command that prints a summary at the end draws it on the same terminal
//! and clears it before the summary.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// What the command writes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// A summary at the end: the bar may share the terminal.
    Summary,
    /// Records as they are read: the bar only when stdout is not a terminal.
    Stream,
}

/// Whether to draw a bar, from the two terminals' state.
pub fn wanted(stderr_is_terminal: bool, stdout_is_terminal: bool, stdout: Stdout) -> bool {
    stderr_is_terminal && (stdout == Stdout::Summary || !stdout_is_terminal)
}

/// A progress bar, or nothing when it is not [`wanted`]. Cleared on drop.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// Whether a bar would be drawn here (so its length need not be
    /// computed when nobody will see it).
    pub fn shown(stdout: Stdout) -> bool {
        wanted(
            std::io::stderr().is_terminal(),
            std::io::stdout().is_terminal(),
            stdout,
        )
    }

    fn new(total: Option<u64>, template: &str, msg: &'static str, stdout: Stdout) -> Self {
        if !Self::shown(stdout) {
            return Progress(None);
        }
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        // The templates are constants: a bad one is a bug here, and then the
        // default style is as good.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(msg);
        Progress(Some(bar))
    }

    /// A bar over `total` bytes.
    pub fn bytes(msg: &'static str, total: u64, stdout: Stdout) -> Self {
        Self::new(
            Some(total),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            msg,
            stdout,
        )
    }

    /// A counter of items, over `total` when it is known.
    pub fn items(msg: &'static str, total: Option<u64>, stdout: Stdout) -> Self {
        let template = if total.is_some() {
            "{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}"
        } else {
            "{msg} {spinner} {human_pos} {per_sec}"
        };
        Self::new(total, template, msg, stdout)
    }

    /// Sets the position.
    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.0 {
            b.set_position(pos);
        }
    }

    /// Advances the position.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Clears the bar (before a summary is printed).
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_drawn_only_on_a_terminal_and_never_between_dumped_lines() {
        // Not a terminal (pipe, file, CI, journald): never.
        for out_tty in [false, true] {
            for s in [Stdout::Summary, Stdout::Stream] {
                assert!(!wanted(false, out_tty, s));
            }
        }
        // A summary command shares the terminal.
        assert!(wanted(true, true, Stdout::Summary));
        assert!(wanted(true, false, Stdout::Summary));
        // A dump only when its records go elsewhere.
        assert!(wanted(true, false, Stdout::Stream));
        assert!(!wanted(true, true, Stdout::Stream));
    }

    #[test]
    fn a_hidden_bar_accepts_every_call() {
        let p = Progress(None);
        p.set(3);
        p.inc(4);
        p.finish();
        assert!(p.0.is_none());
    }
}
