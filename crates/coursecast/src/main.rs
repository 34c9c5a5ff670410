//! The `coursecast` binary: parses the command line and environment, starts logging
//! and calls the library. Nothing else lives here.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use coursecast::{Settings, app, healthcheck, seed, store::Store, telemetry};

/// glibc's allocator took about a sixth of the server's CPU under load (malloc, free
/// and consolidation in the profile); with jemalloc the rooms benchmark stores 28 %
/// more events per second at the same idle memory per connection (bench/runs/README.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Create demo accounts, a course and tokens (PROTOCOL.md section 4).
    Seed {
        /// Number of enrolled students.
        #[arg(long, default_value_t = 10)]
        students: usize,
        /// Where to write the JSON with ids and tokens.
        #[arg(long, default_value = "seed.json")]
        out: PathBuf,
    },
    /// GET /healthz of the server at HOST:PORT (loopback for 0.0.0.0); exit 0 on a
    /// 200 within the deadline. For container health checks.
    Healthcheck {
        /// How long to wait for the answer, milliseconds.
        #[arg(long, default_value_t = 2000)]
        deadline_ms: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A missing .env is normal; a malformed one is worth stopping for.
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let cli = Cli::parse();
    telemetry::init_logging(&cli.settings.log_format, &cli.settings.log_level);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let addr = std::net::SocketAddr::new(cli.settings.host, cli.settings.port);
            let listener = app::listen(addr)?;
            app::serve(cli.settings, listener, app::shutdown_signal()).await
        }
        Command::Migrate => {
            Store::connect(&cli.settings).await?.close().await;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Seed { students, out } => seed::run(&cli.settings, students, &out).await,
        Command::Healthcheck { deadline_ms } => {
            let addr = healthcheck::target(cli.settings.host, cli.settings.port);
            Ok(healthcheck::check(addr, Duration::from_millis(deadline_ms)).await?)
        }
    }
}
