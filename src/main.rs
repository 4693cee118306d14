fn main() {
    // First, while kmatrix has one thread and no other fds: whatever kills
    // kmatrix later, the watchdog stops the children it leaves.
    kmatrix::process::start_watchdog();
    std::process::exit(kmatrix::cli::main());
}
