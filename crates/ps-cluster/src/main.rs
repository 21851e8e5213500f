fn main() -> std::process::ExitCode {
    ps_cluster::run(std::env::args().collect())
}
