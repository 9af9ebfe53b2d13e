//! The `pedcache` command line. Every failure ends as one line on stderr and a non-zero exit.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = pedcache::cli::Cli::parse();
    match pedcache::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", pedcache::error::one_line(&e));
            std::process::exit(1);
        }
    }
}
