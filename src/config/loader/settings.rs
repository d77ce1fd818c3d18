//! The daemon's own sections: `[mqtt]` (with `[mqtt.tls]`), `[store]`, `[runtime]`, `[http]`,
//! `[simulate]`.

use super::*;

/// `[mqtt]`, and whether `client_id` was written (else the caller fills in
/// [`default_client_id`], which needs the file's path).
pub(super) fn mqtt(s: &mut Section<'_>, context: &Context<'_>) -> (MqttConfig, bool) {
    let d = MqttConfig::default();
    let embedded = s.bool("embedded").unwrap_or(d.embedded);
    let host = s.string("host"); // The embedded broker always listens on 127.0.0.1, so `host` does not matter then.
    if let Some(host) = host
        .as_ref()
        .filter(|h| h.value.trim().is_empty() && !embedded)
    {
        s.error(
            host.span,
            "host must not be empty (a host name or IP address of the broker)".into(),
        );
    }
    let port = s.int_as::<u16>("port", 1..=65_535);
    let client_id = s.string("client_id");
    if let Some(id) = client_id.as_ref().filter(|id| id.value.is_empty()) {
        s.error(
            id.span,
            "client_id must not be empty (brokers use it to tell clients apart)".into(),
        );
    }
    let username = s.string("username");
    let password = s.string("password");
    if let (Some(password), None) = (&password, &username) {
        s.error(
            password.span,
            "password is set but username is not (MQTT sends a password only with a user name)"
                .into(),
        );
    }
    let keep_alive = s.duration_within("keep_alive", MIN_KEEP_ALIVE, MAX_KEEP_ALIVE);
    let max_packet_bytes = s
        .int_as("max_packet_bytes", 1024..=MAX_MQTT_PACKET)
        .unwrap_or(d.max_packet_bytes);
    let subscribe_qos = s.int_as("subscribe_qos", 0..=1).unwrap_or(d.subscribe_qos);
    let clean_session = s
        .get::<CleanSessionValue>("clean_session")
        .map_or(d.clean_session, |v| v.value.0);
    let reconnect_min = s.duration("reconnect_min", POSITIVE);
    let reconnect_max = s.duration("reconnect_max", POSITIVE);
    let min = reconnect_min.as_ref().map_or(d.reconnect_min, |v| v.value);
    let max = reconnect_max.as_ref().map_or(d.reconnect_max, |v| v.value);
    if max < min {
        // Point at whichever of the two the user wrote; `max` if both.
        let (span, message) = match (&reconnect_max, &reconnect_min) {
            (Some(given), _) => (
                given.span,
                format!(
                    "reconnect_max must be at least reconnect_min ({}) (got {})",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ),
            (None, Some(given)) => (
                given.span,
                format!(
                    "reconnect_min must be at most reconnect_max ({}) (got {})",
                    humantime::format_duration(max),
                    humantime::format_duration(min)
                ),
            ),
            (None, None) => (s.span, "reconnect_min must be at most reconnect_max".into()),
        };
        s.error(span, message);
    }
    let ingest_queue = s
        .int_as("ingest_queue", 1..=i64::MAX)
        .unwrap_or(d.ingest_queue);
    let publish_queue = s
        .int_as("publish_queue", 1..=i64::MAX)
        .unwrap_or(d.publish_queue);
    let tls = s.table("tls", "tls.").and_then(|mut section| {
        let tls = tls(&mut section, embedded, context);
        let span = section.span;
        section.report_into(s);
        tls.map(|tls| (tls, span))
    });
    if let Some((_, span)) = tls.as_ref().filter(|_| embedded) {
        s.error(
            *span,
            "tls cannot be used with embedded = true: the embedded broker listens without TLS \
             on 127.0.0.1 (remove [mqtt.tls] or set tls.enabled = false)"
                .into(),
        );
    }
    // rumqttc verifies the broker's certificate for the host it connects to (unless
    // tls.server_name says otherwise), and needs it as a DNS name or IP address even then.
    if let Some(host) = host
        .as_ref()
        .filter(|h| tls.is_some() && !embedded && !h.value.trim().is_empty())
        .filter(|h| ServerName::try_from(h.value.as_str()).is_err())
    {
        s.error(
            host.span,
            format!(
                "host \"{}\" cannot be used with TLS: it must be a DNS name or an IP address \
                 (the broker's certificate is checked against it)",
                host.value
            ),
        );
    }
    let default_port = if tls.is_some() && !embedded {
        DEFAULT_TLS_PORT
    } else {
        d.port
    };
    let client_id_written = client_id.is_some();
    let config = MqttConfig {
        embedded,
        host: host.map_or(d.host, |v| v.value),
        port: port.unwrap_or(default_port),
        client_id: client_id.map_or(d.client_id, |v| v.value),
        username: username.map(|v| v.value),
        password: password.map(|v| v.value),
        keep_alive: keep_alive.map_or(d.keep_alive, |v| v.value),
        max_packet_bytes,
        subscribe_qos,
        clean_session,
        reconnect_min: min,
        reconnect_max: max,
        ingest_queue,
        publish_queue,
        tls: tls.map(|(tls, _)| tls),
    };
    (config, client_id_written)
}

/// `[mqtt.tls]`: `None` when `enabled = false`. With [`Files::Check`] (and no other problem in
/// the table) the PEM files are read and the TLS client configuration is built, so that a
/// missing or malformed file is reported at its key by `edgeflow check`.
pub(super) fn tls(s: &mut Section<'_>, embedded: bool, context: &Context<'_>) -> Option<TlsConfig> {
    let enabled = s.bool("enabled").unwrap_or(true);
    let path = |s: &mut Section<'_>, key: &'static str| {
        let written = s.string(key)?;
        if written.value.is_empty() {
            s.error(
                written.span,
                format!("tls.{key} must not be empty (the path of a PEM file)"),
            );
            return None;
        }
        Some(Spanned::with_span(
            context.resolve(&written.value),
            written.span,
        ))
    };
    // Written but unusable (wrong type, empty): already reported, and not to be replaced by
    // the system trust store when the files are checked.
    let ca_written = s.helper.contains("ca_file");
    let ca_file = path(s, "ca_file");
    let client_cert = path(s, "client_cert");
    let client_key = path(s, "client_key");
    let mut server_name = s.string("server_name");
    if let Some(name) = server_name.take() {
        if let Err(error) = ServerName::try_from(name.value.as_str()) {
            s.error(
                name.span,
                format!(
                    "tls.server_name must be a DNS name or an IP address (got \"{}\": {error})",
                    name.value
                ),
            );
        } else {
            server_name = Some(name);
        }
    }
    let client_auth = match (&client_cert, &client_key) {
        (Some(cert), Some(key)) => Some(ClientAuthConfig {
            cert_file: cert.value.clone(),
            key_file: key.value.clone(),
        }),
        (Some(cert), None) => {
            s.error(
                cert.span,
                "tls.client_cert is set but tls.client_key is not (a client certificate needs \
                 its private key: set both or neither)"
                    .into(),
            );
            None
        }
        (None, Some(key)) => {
            s.error(
                key.span,
                "tls.client_key is set but tls.client_cert is not (a client key needs its \
                 certificate: set both or neither)"
                    .into(),
            );
            None
        }
        (None, None) => None,
    };
    if !enabled {
        return None;
    }
    let config = TlsConfig {
        ca_file: ca_file.as_ref().map(|v| v.value.clone()),
        client_auth,
        server_name: server_name.as_ref().map(|v| v.value.clone()),
    };
    // Each file is checked unless its own key already has a problem: a user fixing the
    // config should see a bad `ca_file` and an unpaired `client_cert` in one run.
    if context.files == Files::Check && !embedded && (config.ca_file.is_some() || !ca_written) {
        match crate::tls::client_config(&config) {
            Ok(_) => {}
            Err(TlsError::Setting {
                setting,
                path,
                reason,
            }) => {
                let span = match setting {
                    TlsSetting::CaFile => ca_file.as_ref().map(|v| v.span),
                    TlsSetting::ClientCert => client_cert.as_ref().map(|v| v.span),
                    TlsSetting::ClientKey => client_key.as_ref().map(|v| v.span),
                    TlsSetting::ServerName => server_name.as_ref().map(|v| v.span),
                }
                .unwrap_or(s.span);
                let file = path
                    .map(|p| format!(" \"{}\"", p.display()))
                    .unwrap_or_default();
                s.error(span, format!("tls.{setting}{file}: {reason}"));
            }
            Err(other) => s.error(s.span, other.to_string()),
        }
    }
    Some(config)
}

/// `[store]`
pub(super) fn store(s: &mut Section<'_>) -> StoreConfig {
    let d = StoreConfig::default();
    let data_dir = s.string("data_dir");
    if let Some(dir) = data_dir.as_ref().filter(|dir| dir.value.is_empty()) {
        s.error(
            dir.span,
            "data_dir must not be empty (a directory path, e.g. \"data\" or \"/var/lib/edgeflow\")"
                .into(),
        );
    }
    let checkpoint_interval = s.duration("checkpoint_interval", Duration::from_millis(10));
    let cache_bytes = s
        .int_as("cache_bytes", 65_536..=i64::MAX)
        .unwrap_or(d.cache_bytes);
    // Store time counts whole seconds.
    let state_ttl = s.duration("state_ttl", Duration::from_secs(1));
    StoreConfig {
        // Kept as written: relative paths resolve against the working directory at runtime
        // (systemd sets it to the StateDirectory).
        data_dir: data_dir.map_or(d.data_dir, |v| PathBuf::from(v.value)),
        checkpoint_interval: checkpoint_interval.map_or(d.checkpoint_interval, |v| v.value),
        cache_bytes,
        state_ttl: state_ttl.map_or(d.state_ttl, |v| Some(v.value)),
    }
}

/// `[runtime]`
pub(super) fn runtime(s: &mut Section<'_>) -> RuntimeConfig {
    let d = RuntimeConfig::default();
    RuntimeConfig {
        shards: s.int_as("shards", 0..=256).unwrap_or(d.shards),
        max_resident_keys: s
            .int_as("max_resident_keys", 1..=i64::MAX)
            .unwrap_or(d.max_resident_keys),
        max_memory: s
            .byte_size("max_memory", MIN_MAX_MEMORY)
            .unwrap_or(d.max_memory),
        idle_timeout: s
            .duration("idle_timeout", POSITIVE)
            .map_or(d.idle_timeout, |v| v.value),
        mailbox_capacity: s
            .int_as("mailbox_capacity", 1..=i64::MAX)
            .unwrap_or(d.mailbox_capacity),
        stats_interval: s
            .duration("stats_interval", POSITIVE)
            .map_or(d.stats_interval, |v| v.value),
        shutdown_deadline: s
            .duration("shutdown_deadline", POSITIVE)
            .map_or(d.shutdown_deadline, |v| v.value),
    }
}

/// `[http]`
pub(super) fn http(s: &mut Section<'_>) -> HttpConfig {
    let d = HttpConfig::default();
    let enabled = s.bool("enabled").unwrap_or(d.enabled);
    let listen = s.string("listen").and_then(|listen| {
        match listen.value.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                s.error(
                    listen.span,
                    format!(
                        "listen must be an IP address and port such as \"127.0.0.1:9883\" or \"[::1]:9883\" (got \"{}\")",
                        listen.value
                    ),
                );
                None
            }
        }
    });
    HttpConfig {
        enabled,
        listen: listen.unwrap_or(d.listen),
    }
}

/// `[simulate]`
pub(super) fn simulate(s: &mut Section<'_>) -> SimulateConfig {
    let d = SimulateConfig::default();
    let sensors = s.int_as("sensors", 1..=1_000_000).unwrap_or(d.sensors);
    let rate = s
        .number(
            "rate",
            |r| r.is_finite() && r > 0.0,
            "a number of readings per second greater than 0",
        )
        .unwrap_or(d.rate);
    let topic = topic_template(s, "topic", "topic", &[Placeholder::Sensor]);
    if let Some(topic) = topic
        .as_ref()
        .filter(|t| !t.value.uses(Placeholder::Sensor))
    {
        let message = format!(
            "topic must contain {{sensor}}, replaced by each sensor's id (got \"{}\")",
            topic.value
        );
        s.error(topic.span, message);
    }
    let seed = s.int_as("seed", 0..=i64::MAX).unwrap_or(d.seed);
    let spike_probability = s
        .number(
            "spike_probability",
            |p| (0.0..=1.0).contains(&p),
            "between 0 and 1",
        )
        .unwrap_or(d.spike_probability);
    SimulateConfig {
        sensors,
        rate,
        topic: topic.map_or(d.topic, |v| v.value.as_str().to_owned()),
        seed,
        spike_probability,
    }
}
