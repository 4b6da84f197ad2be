fn main() -> std::process::ExitCode {
    metal3_dataimage::cli::main()
}
