//! The `pedcache` command line. Every failure ends as one line on stderr and a non-zero exit.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // A panic anywhere (a node thread included) is reported once, as the one error line below or
    // as the failing stage's; its default multi-line report goes to the debug log instead.
    std::panic::set_hook(Box::new(|info| log::debug!("{info}")));
    let cli = match pedcache::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("{}", pedcache::cli::one_line_usage_error(&e));
            std::process::exit(2);
        }
    };
    let code = match std::panic::catch_unwind(|| pedcache::cli::run(cli)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {}", pedcache::error::one_line(&e));
            1
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            eprintln!("error: internal error (panic): {msg}");
            101
        }
    };
    std::process::exit(code);
}
