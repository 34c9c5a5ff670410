//! `coursecast-bench`: parses the command line and runs the scenario on a runtime
//! of `--threads` workers. Everything else lives in the library.

use clap::Parser;

/// The generator shares the machine with the server it measures: with glibc's
/// allocator, malloc, realloc and free were a fifth of its instructions per poll.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = coursecast_bench::Cli::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads.max(1)).enable_all().build()?;
    runtime.block_on(coursecast_bench::run(cli))
}
