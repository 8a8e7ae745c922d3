//! The `dragon` command. For now: `--help` and `--version`; `createproject` comes with the
//! templates.

use clap::Parser;

/// Dragon: realtime web apps in Rust over one WebSocket.
#[derive(Parser, Debug)]
#[command(name = "dragon", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("dragon {}: see `dragon --help`", env!("CARGO_PKG_VERSION"));
}
