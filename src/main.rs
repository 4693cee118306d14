fn main() {
    std::process::exit(kmatrix::cli::main());
}
