//! The `muster` binary: hands its arguments to `muster::cli` and exits with the code it returns.

fn main() {
    let code = muster::cli::main(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
