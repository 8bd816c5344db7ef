#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ironic_metadata::main()
}
