//! Turning errors into the one-line messages the command line promises.

/// The error chain on one line: each cause's first line, joined by ": ". candle appends a
/// backtrace to its errors' text when RUST_BACKTRACE is set; that never reaches the user.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or("").trim().to_string();
        // anyhow's context chain repeats nothing, but wrapped messages may already contain the
        // inner text ("loading x: inner"); skip a cause already spelled out.
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
}
