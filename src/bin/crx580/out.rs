//! Everything the CLI prints goes through here. A reader that stops early (`crx580 info m | head`)
//! closes the pipe; the next write then fails with `BrokenPipe`, and that ends the program quietly
//! with status 0, as if the output had been read to the end (ripgrep does the same), instead of
//! `println!`'s "failed printing to stdout" panic.

use std::io::{self, Write};

/// `println!` that survives a closed stdout.
macro_rules! outln {
    () => { $crate::out::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::out::line(format_args!($($arg)*)) };
}
pub(crate) use outln;

/// `eprintln!` that never panics: a message that cannot be written is dropped.
macro_rules! note {
    ($($arg:tt)*) => { $crate::out::note_line(format_args!($($arg)*)) };
}
pub(crate) use note;

pub fn line(args: std::fmt::Arguments) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.write_all(b"\n")) {
        drop(out);
        stdout_failed(e);
    }
}

/// Flushes stdout before exiting, with the same handling of a closed pipe.
pub fn flush() {
    if let Err(e) = io::stdout().flush() {
        stdout_failed(e);
    }
}

pub fn note_line(args: std::fmt::Arguments) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|_| err.write_all(b"\n"));
}

fn stdout_failed(e: io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    note_line(format_args!("crx580: error: cannot write to stdout: {e}"));
    std::process::exit(1);
}
