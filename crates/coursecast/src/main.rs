//! The `coursecast` binary: parses the command line and environment, starts logging
//! and calls the library. Nothing else lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use coursecast::{Settings, app, seed, store::Store, telemetry};

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
    }
}
