//! The `pdl` binary: parses the command line, runs it, and turns any error into one line on stderr
//! and exit code 1 (clap's usage errors exit with 2).

use clap::Parser;

fn main() {
    let cli = pdl_training::cli::Cli::parse();
    if let Err(e) = pdl_training::cli::run(cli) {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        let mut line = chain.join(": ");
        line.retain(|c| c != '\n');
        eprintln!("error: {line}");
        std::process::exit(1);
    }
}
