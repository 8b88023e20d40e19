//! The `cairn` binary: parses the command line, runs one command, and maps
//! errors to documented exit codes (docs/exit-codes.md).

mod cli;

fn main() {
    std::process::exit(cli::main());
}
