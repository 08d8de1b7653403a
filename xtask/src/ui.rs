//! What the commands share on the terminal: spinners and progress bars around slow library
//! calls, and JSON or text output of a report.

use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Run `f` under a spinner saying `message` (hidden when stderr is not a terminal).
pub fn spinning<T>(message: String, f: impl FnOnce() -> T) -> T {
    let s = bar(0, ProgressStyle::default_spinner(), 150).with_message(message);
    let out = f();
    s.finish_and_clear();
    out
}

/// An indicatif style from a template written in this crate.
pub fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template")
}

/// A progress bar of `len` steps drawn in `style`, ticking every `ms` milliseconds (`len` 0:
/// a spinner).
pub fn bar(len: u64, style: ProgressStyle, ms: u64) -> ProgressBar {
    let bar = match len {
        0 => ProgressBar::new_spinner(),
        n => ProgressBar::new(n),
    };
    let bar = bar.with_style(style);
    bar.enable_steady_tick(Duration::from_millis(ms));
    bar
}

/// Print `value` as pretty JSON when `json`, else `text` (which ends with its own newline).
pub fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}
