//! The `muster` binary: hands its arguments to `muster::cli` and exits with the code it returns.

/// The main thread's handle, held for the whole run.
///
/// The first `std::thread::current()` on the main thread (tokio's runtime asks for it)
/// allocates the thread's handle, and std keeps it in thread-local storage until the process
/// ends, as a pointer past the start of the allocation (`Arc::into_raw`). Nothing frees it at
/// exit, so valgrind sees only that inner pointer and reports the 48 bytes as "possibly lost".
/// Holding a clone here keeps a pointer to the allocation itself for as long as std keeps the
/// handle, which is what it is: memory in use until the end, not a leak.
static MAIN_THREAD: std::sync::OnceLock<std::thread::Thread> = std::sync::OnceLock::new();

fn main() {
    let _ = MAIN_THREAD.set(std::thread::current());
    let code = muster::cli::main(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
