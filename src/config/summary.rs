//! The human summary `edgeflow check` prints for a valid configuration.

use std::fmt::Write as _;

use humantime::format_duration;

use super::schema::{Config, KeySource, ModelConfig, PayloadFormat, TimeUnit};

impl Config {
    /// A multi-line, human-readable summary: the broker (or the embedded one and its port),
    /// the store, the runtime sizing, the simulator if any, and for each pipeline its topics,
    /// format, key, time, fields, model with parameters and output template.
    ///
    /// Meant for people (`edgeflow check`); the layout may change, do not parse it.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // `fmt::Write` for `String` cannot fail; ignoring its `Ok` keeps this readable.
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "config {}", self.source.display())?;
        let mqtt = &self.mqtt;
        if mqtt.embedded {
            write!(out, "mqtt: embedded broker on 127.0.0.1:{}", mqtt.port)?;
        } else {
            write!(out, "mqtt: broker {}:{}", mqtt.host, mqtt.port)?;
        }
        write!(out, ", client id \"{}\"", mqtt.client_id)?;
        if let Some(username) = &mqtt.username {
            write!(out, ", user \"{username}\"")?;
            if mqtt.password.is_some() {
                write!(out, " with password")?;
            }
        }
        writeln!(
            out,
            ", keep-alive {}, subscribe qos {}, max packet {} bytes",
            format_duration(mqtt.keep_alive),
            mqtt.subscribe_qos,
            mqtt.max_packet_bytes
        )?;
        writeln!(
            out,
            "store: data dir {}, checkpoint every {}, cache {} bytes",
            self.store.data_dir.display(),
            format_duration(self.store.checkpoint_interval),
            self.store.cache_bytes
        )?;
        let runtime = &self.runtime;
        let shards = if runtime.shards == 0 {
            "one shard per core".to_owned()
        } else {
            format!("{} shards", runtime.shards)
        };
        writeln!(
            out,
            "runtime: {shards}, at most {} resident keys, idle timeout {}",
            runtime.max_resident_keys,
            format_duration(runtime.idle_timeout)
        )?;
        if let Some(simulate) = &self.simulate {
            writeln!(
                out,
                "simulate: {} sensors, {} readings/s on \"{}\" (seed {})",
                simulate.sensors, simulate.rate, simulate.topic, simulate.seed
            )?;
        }
        writeln!(out, "pipelines: {}", self.pipelines.len())?;
        for pipeline in &self.pipelines {
            writeln!(out, "  pipeline \"{}\"", pipeline.name)?;
            writeln!(out, "    topics: {}", pipeline.topics.join(", "))?;
            let format = match pipeline.format {
                PayloadFormat::Json => "json",
                PayloadFormat::Number => "number",
            };
            writeln!(
                out,
                "    format: {format} (payloads over {} bytes dropped)",
                pipeline.max_payload_bytes
            )?;
            let key = match &pipeline.key {
                KeySource::Topic => "the whole topic".to_owned(),
                KeySource::TopicLevel(level) => format!("topic level {level}"),
                KeySource::Pointer(pointer) => format!("payload {pointer}"),
            };
            writeln!(out, "    key: {key}")?;
            match &pipeline.time {
                None => writeln!(out, "    time: arrival time")?,
                Some(time) => {
                    let unit = match time.unit {
                        TimeUnit::Auto => "auto",
                        TimeUnit::Seconds => "s",
                        TimeUnit::Milliseconds => "ms",
                        TimeUnit::Rfc3339 => "rfc3339",
                    };
                    writeln!(out, "    time: payload \"{}\" ({unit})", time.pointer)?;
                }
            }
            let fields = pipeline
                .fields
                .iter()
                .map(|field| format!("{} = \"{}\"", field.name, field.pointer))
                .collect::<Vec<_>>()
                .join(", ");
            writeln!(out, "    fields: {fields}")?;
            match &pipeline.model {
                ModelConfig::Forecast(forecast) => writeln!(
                    out,
                    "    model: forecast of {} (lags {}, forgetting {}, interval z {})",
                    forecast.target, forecast.lags, forecast.forgetting, forecast.interval_z
                )?,
            }
            writeln!(
                out,
                "    output: {} (qos {})",
                pipeline.output, pipeline.output_qos
            )?;
        }
        Ok(())
    }
}
