//! Entry point of the operator binary. The reconciler is not built yet: the binary says so and exits non-zero
//! instead of pretending to run.

fn main() -> std::process::ExitCode {
    eprintln!("sensorpipe-operator {}: the controller is not implemented yet", env!("CARGO_PKG_VERSION"));
    std::process::ExitCode::FAILURE
}
