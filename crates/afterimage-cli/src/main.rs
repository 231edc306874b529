//! The `afterimage` binary.

fn main() -> std::process::ExitCode {
    afterimage_cli::main()
}
