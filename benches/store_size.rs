//! State on disk: bytes per key of the forecast pipelines of `configs/` in the store.
//!
//!     cargo bench --bench store_size                # 100,000 keys × 200 readings
//!     EDGEFLOW_BENCH_KEYS=20000 cargo bench --bench store_size
//!
//! For each pipeline (the demo's `temperature`, the gateway's `boiler-temperature`), every key
//! gets `READINGS` readings of the synthetic fleet through [`Pipeline::process`] (the state
//! reaches its full size: the bench prints the encoded size after 50, 100, 200 and 1,000
//! readings of one key first), then the states go through the store as the daemon writes them
//! (`Pipeline::encode_state` → `Store::put`, in checkpoints of 10,000 keys, each followed by a
//! flush). Printed: the encoded state per key (mean), the data dir per key after the flush
//! and after close (`du`: allocated blocks), the bytes the process wrote to the disk per key
//! (`/proc/self/io` `write_bytes`: sled's write amplification over the encoded bytes; the
//! kernel's count can lag behind the flushes, so it is a rough figure), and the
//! same after a second round that rewrites every key (a key's state changes between
//! checkpoints; sled is log-structured, so an overwrite leaves garbage until it compacts).

use std::path::Path;
use std::time::Instant;

use edgeflow::pipeline::{Pipeline, Pipelines, Scratch};
use edgeflow::store::Store;

const READINGS: usize = 200;
const CHECKPOINT_KEYS: usize = 10_000;

/// Bytes this process has caused to be written to the block device so far.
fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))?
        .trim()
        .parse()
        .ok()
}

/// Allocated bytes under `dir` (what `du -s` reports).
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Runs `readings` readings of sensor `sensor` of a fleet through `p` from a fresh state.
fn key_state(
    p: &Pipeline,
    fleet: &mut edgeflow::sim::Fleet,
    sensor: usize,
    readings: usize,
    scratch: &mut Scratch,
    values: &mut [f64],
) -> edgeflow::pipeline::KeyState {
    let mut state = p.new_state();
    let key = fleet.sensor_id(sensor).to_string();
    for i in 0..readings {
        values.fill(fleet.next_value(sensor));
        let time = 1_700_000_000_000i64 + i as i64 * 1000;
        p.process(&mut state, &key, time, values, scratch, &mut |_, _| {});
    }
    state
}

fn measure(label: &str, config_path: &str, pipeline: &str, keys: usize) -> anyhow::Result<()> {
    let config = edgeflow::config::load_offline(Path::new(config_path))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pipelines = Pipelines::new(&config)?;
    let p = pipelines
        .iter()
        .find(|p| p.name == pipeline)
        .ok_or_else(|| anyhow::anyhow!("{config_path} has no pipeline {pipeline}"))?;
    let mut scratch = Scratch::default();
    let fields = config
        .pipelines
        .iter()
        .find(|c| c.name == pipeline)
        .map_or(1, |c| c.fields.len());
    let mut values = vec![0.0; fields];
    let mut buf = Vec::new();

    println!("{label}: pipeline {pipeline:?} of {config_path}");
    let mut growth = Vec::new();
    for readings in [1, 50, 100, 200, 1000] {
        let mut fleet = edgeflow::sim::Fleet::new(1, 7, 0.01);
        let state = key_state(p, &mut fleet, 0, readings, &mut scratch, &mut values);
        p.encode_state(&state, &mut buf)?;
        growth.push(format!("{readings}: {} B", buf.len()));
    }
    println!(
        "  encoded state of one key after N readings: {}",
        growth.join(", ")
    );

    let started = Instant::now();
    let mut fleet = edgeflow::sim::Fleet::new(keys, 7, 0.01);
    let states: Vec<(String, edgeflow::pipeline::KeyState)> = (0..keys)
        .map(|k| {
            let state = key_state(p, &mut fleet, k, READINGS, &mut scratch, &mut values);
            (fleet.sensor_id(k).to_string(), state)
        })
        .collect();
    println!(
        "  {keys} keys × {READINGS} readings in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // On the disk the bench runs from (a tmpfs /tmp would show no block writes).
    let parent = Path::new("target");
    std::fs::create_dir_all(parent)?;
    let dir = tempfile::tempdir_in(parent)?;
    let store = Store::open(dir.path(), config.store.cache_bytes)?;
    let mut encoded_total = 0u64;
    let written_before = write_bytes();
    for round in 0..2 {
        for chunk in states.chunks(CHECKPOINT_KEYS) {
            for (key, state) in chunk {
                p.encode_state(state, &mut buf)?;
                if round == 0 {
                    encoded_total += buf.len() as u64;
                }
                store.put(&p.name, key, &buf)?;
            }
            store.flush_blocking()?;
        }
        let on_disk = du(dir.path());
        let written = match (written_before, write_bytes()) {
            (Some(a), Some(b)) => format!(
                "{:.0} B/key written ({:.2}× the encoded bytes)",
                (b - a) as f64 / keys as f64,
                (b - a) as f64 / (encoded_total as f64 * (round + 1) as f64)
            ),
            _ => "write_bytes not available".into(),
        };

        if round == 0 {
            println!(
                "  encoded state   {:.0} B/key (mean)",
                encoded_total as f64 / keys as f64
            );
        }
        println!(
            "  after {} checkpoint round(s): data dir {:.1} MB = {:.0} B/key; {written}",
            round + 1,
            on_disk as f64 / 1e6,
            on_disk as f64 / keys as f64
        );
    }
    drop(store);
    let closed = du(dir.path());
    if let Ok(keep) = std::env::var("EDGEFLOW_BENCH_KEEP") {
        let to = Path::new(&keep).join(label);
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(dir.path())?.flatten() {
            if entry.metadata()?.is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
    }
    println!(
        "  after close: data dir {:.1} MB = {:.0} B/key",
        closed as f64 / 1e6,
        closed as f64 / keys as f64
    );
    // Reopen and read every key back: what was written is what the daemon restores.
    let store = Store::open(dir.path(), config.store.cache_bytes)?;
    let mut restored = 0;
    for (key, state) in &states {
        let bytes = store
            .get(&p.name, key)?
            .ok_or_else(|| anyhow::anyhow!("key {key} missing after reopen"))?;
        if p.restore_state(&bytes)?.as_ref() == Some(state) {
            restored += 1;
        }
    }
    anyhow::ensure!(
        restored == keys,
        "only {restored} of {keys} states restored unchanged"
    );
    println!("  reopened: all {keys} states restored unchanged");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let keys = std::env::var("EDGEFLOW_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    measure("demo", "configs/demo.toml", "temperature", keys)?;
    measure(
        "gateway",
        "configs/gateway.toml",
        "boiler-temperature",
        keys,
    )?;
    Ok(())
}
