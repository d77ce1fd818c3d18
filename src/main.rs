//! The `edgeflow` binary: parse the command line, set up logging, load the config, and hand
//! over to the library.

use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use edgeflow::config::{self, Config, MqttConfig, SimulateConfig};

/// Counts heap bytes, so `[runtime] max_memory` is enforced on what the daemon really holds.
#[global_allocator]
static ALLOCATOR: edgeflow::memory::CountingAllocator = edgeflow::memory::CountingAllocator;

/// Streaming machine learning for IoT/edge gateways.
#[derive(Parser)]
#[command(name = "edgeflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print a summary; on error print every problem as
    /// `file:line:col: message` and exit non-zero.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the pipelines over recorded messages (JSON lines `{"topic", "payload"}`), with no
    /// network and no wall clock; outputs go to stdout as JSON lines.
    ///
    /// Memory is bounded like the daemon's, by `[runtime] max_resident_keys` and `max_memory`
    /// (defaults 100000 keys, 192MiB): beyond either, the least recently used keys are
    /// passivated to a temporary sled store in a new directory under `TMPDIR` (or /tmp),
    /// removed when the replay ends, and restored on their next reading. The outputs are the
    /// same, byte for byte, as with every key in memory; the summary says how many key states
    /// were passivated. Raise both bounds in the config to keep every key in memory.
    Replay {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Input file, or `-` for stdin.
        #[arg(long, short)]
        input: PathBuf,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        summary: Option<PathBuf>,
    },
    /// Publish a synthetic sensor fleet to a broker (demo and load generator).
    Simulate {
        /// Broker host.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Broker port.
        #[arg(long, default_value_t = 1883)]
        port: u16,
        /// Number of sensors.
        #[arg(long, default_value_t = 50)]
        sensors: usize,
        /// Readings per second over the whole fleet.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Stop after this many messages (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
        /// Topic template (`{sensor}` is replaced by the sensor id).
        #[arg(long, default_value = "sensors/{sensor}/temperature")]
        topic: String,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// MQTT user name.
        #[arg(long)]
        username: Option<String>,
        /// MQTT password.
        #[arg(long)]
        password: Option<String>,
    },
    /// Print the persisted state of every key (JSON lines). The daemon must not be running on
    /// the same data dir (the store is locked while it runs).
    Inspect {
        /// Configuration file (TOML): gives the data dir and the pipelines.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
    },
}

/// Used when `RUST_LOG` is not set. rumqttd logs ordinary client disconnects at ERROR, so the
/// embedded broker is silenced by default; edgeflow reports the broker errors that matter
/// (a port in use, a failed start) itself. `RUST_LOG=info,rumqttd=info` brings it back.
const DEFAULT_LOG_FILTER: &str = "info,rumqttd=off";

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // `try_init` also installs the `log` → tracing bridge, so rumqttc's and sled's logs
    // appear here, filtered the same way.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Load `path` with `load` (`config::load`, or `config::load_offline` for commands that do not
/// connect), printing every problem on failure.
fn load_config_with(
    path: &Path,
    load: fn(&Path) -> Result<Config, config::ConfigErrors>,
) -> Result<Config, ExitCode> {
    load(path).map_err(|errors| {
        eprint!("{errors}");
        eprintln!("{}: {} error(s)", path.display(), errors.errors.len());
        ExitCode::from(2)
    })
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    load_config_with(path, config::load)
}

fn main() -> ExitCode {
    edgeflow::memory::limit_allocator_arenas();
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Check { config } => {
            return match load_config(&config) {
                Ok(c) => {
                    println!("{}: ok", config.display());
                    print!("{}", c.summary());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Run { config } => match load_config(&config) {
            Ok(c) => run(c),
            Err(code) => return code,
        },
        Command::Replay {
            config,
            input,
            summary,
        } => match load_config_with(&config, config::load_offline) {
            Ok(c) => replay(&c, &input, summary.as_deref()),
            Err(code) => return code,
        },
        Command::Simulate {
            host,
            port,
            sensors,
            rate,
            count,
            topic,
            seed,
            username,
            password,
        } => {
            let mqtt = MqttConfig {
                host,
                port,
                client_id: format!("edgeflow-sim-{}", std::process::id()),
                username,
                password,
                ..MqttConfig::default()
            };
            let sim = SimulateConfig {
                sensors,
                rate,
                topic,
                seed,
                ..SimulateConfig::default()
            };
            simulate(mqtt, sim, count)
        }
        Command::Inspect { config, pipeline } => {
            match load_config_with(&config, config::load_offline) {
                Ok(c) => inspect(&c, pipeline.as_deref()),
                Err(code) => return code,
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgeflow: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancel `token` on SIGTERM or SIGINT; ask for a reload on SIGHUP (several SIGHUPs during
/// one reload make one more reload, not a queue of them).
fn handle_signals(token: CancellationToken, reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before the daemon starts, so an early SIGHUP cannot kill the process.
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return;
    };
    actix_rt::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
                _ = int.recv() => { tracing::info!("SIGINT received"); break; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    let _ = reload.try_send(());
                }
            }
        }
        token.cancel();
    });
}

fn run(config: Config) -> anyhow::Result<()> {
    let source = config.source.clone();
    let system = actix_rt::System::new();
    system.block_on(async move {
        let token = CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        handle_signals(token.clone(), reload_tx);
        edgeflow::app::run(config, token, reload_rx)
            .await
            .with_context(|| format!("running {}", source.display()))
    })
}

fn replay(config: &Config, input: &Path, summary_path: Option<&Path>) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = if input == Path::new("-") {
        Box::new(BufReader::with_capacity(1 << 16, std::io::stdin().lock()))
    } else {
        let file =
            std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut replayer = edgeflow::replay::Replayer::new(config)?;
    replayer.run(reader, &mut out)?;
    out.flush()?;
    let summary = replayer.summary();
    eprint!("{summary}");
    if let Some(path) = summary_path {
        let json = serde_json::to_vec_pretty(&summary)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn simulate(mqtt: MqttConfig, sim: SimulateConfig, count: Option<u64>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            t.cancel();
        });
        let sent = edgeflow::sim::run_simulator(&mqtt, &sim, count, token).await?;
        tracing::info!("simulator sent {sent} messages");
        Ok(())
    })
}

fn inspect(config: &Config, only: Option<&str>) -> anyhow::Result<()> {
    let store = edgeflow::store::Store::open(&config.store.data_dir, config.store.cache_bytes)?;
    let pipelines = edgeflow::pipeline::Pipelines::new(config)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for p in pipelines
        .iter()
        .filter(|p| only.is_none_or(|o| o == p.name))
    {
        for (key, bytes) in store.entries(&p.name)? {
            // Version 4 states are read too (only the covariance layout differs, and the
            // decoder reads both).
            let line = match edgeflow::store::decode_state_since::<edgeflow::pipeline::KeyState>(
                &bytes, 4,
            ) {
                Ok(state) => edgeflow::pipeline::describe_state(&p.name, &key, &state),
                Err(e) => {
                    serde_json::json!({"pipeline": p.name, "key": key, "error": e.to_string()})
                }
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}
