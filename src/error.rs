//! The library's one error type, and turning any error into the one line the command line
//! promises.
//!
//! Library code returns [`Result`]; a failure names the file it came from (`"loading {path}:
//! {cause}"`) and keeps its cause chain (`std::error::Error::source`), so a caller can both print
//! one line and inspect what went wrong. `anyhow` lives only at the binary's edge (`cli/`,
//! `main.rs`); `?` turns an [`Error`] into an `anyhow::Error` there with the chain intact.

use std::fmt::Display;
use std::path::PathBuf;

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tensor operation failed (shapes, dtypes, devices).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A thread of the node panicked or failed; `stage` names it (source, perception, ...).
    #[error("{stage} stage failed: {cause}")]
    Stage { stage: &'static str, cause: String },
    /// Work given up because the node is stopping (a frame left unfinished): not a failure.
    #[error("cancelled: the node is stopping")]
    Cancelled,
    /// Any other failure, as a message (the usual case: input that is not what it must be).
    #[error("{0}")]
    Msg(String),
    /// A failure with what was being done when it happened (`"loading x.ron"`).
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
    /// An error from a library the crate calls (JSON, RON, images, safetensors, ...).
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// An error from a message.
    pub fn msg(m: impl Display) -> Self {
        Error::Msg(m.to_string())
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wrap with what was being done.
    pub fn context(self, context: impl Display) -> Self {
        Error::Context {
            context: context.to_string(),
            source: Box::new(self),
        }
    }

    /// This error and its causes, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
        let first: &(dyn std::error::Error + 'static) = self;
        std::iter::successors(Some(first), |e| e.source())
    }

    /// The whole chain on one line (see [`one_line`]).
    pub fn one_line(&self) -> String {
        join_chain(self.chain())
    }
}

macro_rules! external {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::External(Box::new(e))
            }
        }
    )*};
}
external!(
    serde_json::Error,
    ron::Error,
    ron::error::SpannedError,
    image::ImageError,
    safetensors::SafeTensorError,
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::fmt::Error,
    prost::DecodeError
);

impl From<std::io::Error> for Error {
    /// An I/O error without a file; prefer [`Error::io`], which names it.
    fn from(e: std::io::Error) -> Self {
        Error::External(Box::new(e))
    }
}

impl From<String> for Error {
    fn from(m: String) -> Self {
        Error::Msg(m)
    }
}

impl From<&str> for Error {
    fn from(m: &str) -> Self {
        Error::Msg(m.to_string())
    }
}

/// `.context(..)` / `.with_context(|| ..)` on results and options, as with `anyhow`.
pub trait Context<T> {
    fn context<C: Display>(self, context: C) -> Result<T>;
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::msg(context))
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::msg(f()))
    }
}

/// An [`Error`] from a format string.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::error::Error::Msg(format!($($arg)*)) };
}

/// Return early with an [`Error`] from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::err!($($arg)*).into()) };
}

/// Return early with an [`Error`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::bail!($($arg)*);
        }
    };
}

/// The error chain on one line: each cause's first line, joined by ": ". candle appends a
/// backtrace to its errors' text when RUST_BACKTRACE is set; that never reaches the user.
pub fn one_line(e: &anyhow::Error) -> String {
    join_chain(e.chain())
}

fn join_chain<'a>(chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in chain {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or("").trim().to_string();
        // A context chain repeats nothing, but wrapped messages may already contain the inner
        // text ("loading x: inner"); skip a cause already spelled out.
        if !first.is_empty() && !parts.iter().any(|p| p.contains(&first)) {
            parts.push(first);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_backtrace_lines_and_repeats() {
        let inner = anyhow::anyhow!(
            "cannot find tensor x\n   0: candle_core::error::Error::bt\n   1: main"
        );
        let e = inner.context("loading m.safetensors");
        assert_eq!(one_line(&e), "loading m.safetensors: cannot find tensor x");
    }

    #[test]
    fn library_errors_keep_their_chain_through_anyhow() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e: Error = Error::io("a/b.ron", io).context("loading config");
        assert_eq!(e.one_line(), "loading config: a/b.ron: No such file");
        assert_eq!(e.chain().count(), 3);
        let any: anyhow::Error = e.into();
        assert_eq!(one_line(&any), "loading config: a/b.ron: No such file");
        assert!(any.downcast_ref::<Error>().is_some());
    }

    #[test]
    fn context_on_options_and_macros() {
        fn f(x: Option<u8>) -> Result<u8> {
            let v = x.context("no value")?;
            crate::ensure!(v < 10, "value {v} too large");
            Ok(v)
        }
        assert_eq!(f(Some(3)).ok(), Some(3));
        assert_eq!(f(None).unwrap_err().one_line(), "no value");
        assert_eq!(f(Some(12)).unwrap_err().one_line(), "value 12 too large");
    }
}
