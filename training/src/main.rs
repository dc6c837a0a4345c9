//! The `pdl` binary: parses the command line, runs it, and turns any error into one line on stderr
//! and exit code 1 (clap's usage errors exit with 2).

use clap::Parser;

fn main() {
    let cli = pdl_training::cli::Cli::parse();
    if let Err(e) = pdl_training::cli::run(cli) {
        eprintln!("error: {}", pdl_training::cli::one_line(&e));
        std::process::exit(1);
    }
}
