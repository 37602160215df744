//! The `muster` binary: sets up muster's own logging and hands over to `muster::cli`.

fn main() {
    let code = muster::cli::main(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
