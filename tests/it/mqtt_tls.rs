//! MQTT over TLS with user name and password, against a real Mosquitto.
//!
//! Each test generates a CA, a server certificate for `localhost`/127.0.0.1 and a client
//! certificate (rcgen), writes them to a temporary directory with a Mosquitto password file
//! (`mosquitto_passwd`), and starts its own `mosquitto` on a free port with a TLS listener and
//! `allow_anonymous false`. Without `mosquitto`/`mosquitto_passwd` the tests print SKIP; with
//! `CI=true` they fail instead.
//!
//! Nothing here waits on the clock: outputs, failures and log lines are awaited as events,
//! with [`crate::common::EVENT_TIMEOUT`] only as a safety net.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use edgeflow::config::{ClientAuthConfig, Config, TlsConfig};
use edgeflow::mqtt::{ConnectionFailure, FailureKind};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::common::*;

const USER: &str = "edgeflow-gw";
const PASSWORD: &str = "correct horse battery staple";
const SENSORS: usize = 3;
const STEPS: usize = 15;

/// PEM files of one generated PKI.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA named `ca_name` and the server and client certificates it signs, written to `dir`
/// with `prefix` before each file name.
fn pki(dir: &Path, prefix: &str, ca_name: &str) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");

    let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
        .expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = server.signed_by(&server_key, &ca).expect("server cert");

    let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client
        .distinguished_name
        .push(DnType::CommonName, "gateway-1");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().expect("client key");
    let client_cert = client.signed_by(&client_key, &ca).expect("client cert");

    let file = |name: &str, pem: String| {
        let path = dir.join(format!("{prefix}{name}"));
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    Pki {
        ca: file("ca.pem", ca.pem()),
        server_cert: file("server.pem", server_cert.pem()),
        server_key: file("server.key", server_key.serialize_pem()),
        client_cert: file("client.pem", client_cert.pem()),
        client_key: file("client.key", client_key.serialize_pem()),
    }
}

/// A Mosquitto with one TLS listener, killed on drop.
struct TlsBroker {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsBroker {
    /// Mosquitto's log so far (for assertion messages).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Start Mosquitto on a free port with a TLS listener using `pki`'s server certificate,
/// accepting only `USER`/`PASSWORD`; with `require_client_cert`, also only clients with a
/// certificate signed by the CA. None (skip) outside CI when Mosquitto is not installed.
fn start_broker(dir: &Path, pki: &Pki, require_client_cert: bool) -> Option<TlsBroker> {
    let passwords = dir.join("passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args([USER, PASSWORD])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match made {
        Ok(status) => assert!(status.success(), "mosquitto_passwd failed: {status}"),
        Err(e) => {
            assert!(
                !in_ci(),
                "CI=true but mosquitto_passwd cannot run ({e}): apt-get install mosquitto"
            );
            eprintln!("SKIP: mosquitto_passwd not found ({e}); apt-get install mosquitto to run the TLS tests");
            return None;
        }
    }
    let port = edgeflow::mqtt::free_local_port().expect("free port");
    let log = dir.join("mosquitto.log");
    let conf = dir.join("mosquitto.conf");
    // `user root`: when started as root (CI), Mosquitto would otherwise switch to the
    // `mosquitto` user, which cannot read the key in our private temporary directory. It has
    // no effect for other users.
    std::fs::write(
        &conf,
        format!(
            "user root\npersistence false\nper_listener_settings false\nallow_anonymous false\n\
             password_file {passwords}\nlog_dest file {log}\nlog_type all\n\
             listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate {require_client_cert}\n",
            passwords = passwords.display(),
            log = log.display(),
            ca = pki.ca.display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
        ),
    )
    .expect("write mosquitto.conf");
    let child = match Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            assert!(
                !in_ci(),
                "CI=true but mosquitto cannot run ({e}): apt-get install mosquitto"
            );
            eprintln!(
                "SKIP: no mosquitto binary ({e}); apt-get install mosquitto to run the TLS tests"
            );
            return None;
        }
    };
    let mut broker = TlsBroker { child, port, log };
    // Connection refused until the listener is bound (bounded wait).
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(broker);
        }
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!("mosquitto exited ({status}):\n{}", broker.log());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("mosquitto did not listen on {port}:\n{}", broker.log());
}

/// The daemon's config: the usual forecast pipeline on `broker`, with TLS and credentials.
/// `tls` is the body of `[mqtt.tls]`; `password` the password the daemon sends.
fn daemon_config(dir: &Path, broker: &TlsBroker, password: &str, tls: &str) -> Config {
    let text = config_text(
        "127.0.0.1",
        broker.port,
        &dir.join("data"),
        &format!("edgeflow-tls-{}", broker.port),
    )
    .replacen(
        "[mqtt]\n",
        &format!("[mqtt]\nusername = \"{USER}\"\npassword = \"{password}\"\n"),
        1,
    );
    let path = write_config(dir, &format!("{text}\n[mqtt.tls]\n{tls}"));
    load(&path)
}

/// A test client over TLS trusting `pki`'s CA, presenting its client certificate.
async fn tls_client(broker: &TlsBroker, pki: &Pki) -> TestClient {
    let tls = edgeflow::tls::client_config(&TlsConfig {
        ca_file: Some(pki.ca.clone()),
        client_auth: Some(ClientAuthConfig {
            cert_file: pki.client_cert.clone(),
            key_file: pki.client_key.clone(),
        }),
        server_name: None,
    })
    .expect("client TLS config");
    let mut options = MqttOptions::new(
        format!("tls-test-{}", broker.port),
        "127.0.0.1",
        broker.port,
    );
    options
        .set_credentials(USER, PASSWORD)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    TestClient::connect_with(options).await
}

/// Wait until the daemon has recorded a failure for which `done` holds; returns it.
async fn failure_where(
    daemon: &RunningDaemon,
    done: impl FnMut(&Option<ConnectionFailure>) -> bool,
) -> ConnectionFailure {
    let mut failures = daemon.handle.mqtt.watch_failures();
    let seen = tokio::time::timeout(EVENT_TIMEOUT, failures.wait_for(done))
        .await
        .expect("failure recorded in time")
        .expect("status alive")
        .clone();
    seen.expect("a failure")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_password_and_client_certificate_delivers_forecasts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), "", "edgeflow test CA");
    let Some(broker) = start_broker(dir.path(), &pki, true) else {
        return;
    };
    // Connected by address, verified for the DNS name: exercises `server_name`.
    let config = daemon_config(
        dir.path(),
        &broker,
        PASSWORD,
        "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"\n\
         server_name = \"localhost\"\n",
    );
    assert!(config.summary().contains("mqtt tls: on"));

    let mut client = tls_client(&broker, &pki).await;
    client.subscribe("edgeflow/temperature/#").await;
    let daemon = RunningDaemon::start(config.clone()).await;
    let status = daemon.handle.mqtt.snapshot();
    assert!(status.connected && status.subscribed, "{status:?}");
    assert_eq!(daemon.handle.mqtt.last_failure(), None);

    let sent = readings(SENSORS, 0, STEPS);
    client.publish_all(&sent).await;
    let got = client.receive(sent.len()).await;
    daemon.shutdown().await;
    assert_eq!(got, replay_outputs(&config, &sent));
    let log = broker.log();
    assert!(
        log.contains(&format!("u'{USER}'")),
        "the daemon logged in as {USER}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_as_unauthorized_and_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), "", "edgeflow test CA");
    // TLS without client certificates: the password is all the broker checks.
    let Some(broker) = start_broker(dir.path(), &pki, false) else {
        return;
    };
    let config = daemon_config(dir.path(), &broker, "wrong", "ca_file = \"ca.pem\"\n");
    let daemon = RunningDaemon::start_connecting(config).await;

    // The TLS handshake succeeded (the refusal is an MQTT CONNACK), and the daemon keeps
    // trying: wait for the third refusal.
    let failure = failure_where(&daemon, |f| f.as_ref().is_some_and(|f| f.count >= 3)).await;
    assert_eq!(failure.kind, FailureKind::Unauthorized, "{failure:?}");
    assert!(
        failure
            .message
            .starts_with("broker refused: not authorized (check [mqtt] username/password"),
        "{failure:?}"
    );
    let status = daemon.handle.mqtt.snapshot();
    assert!(!status.connected, "{status:?}");
    assert!(status.reconnects >= 3, "{status:?}");
    // Still alive and in control: a graceful shutdown works.
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_certificate_is_reported_as_a_tls_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path(), "", "edgeflow test CA");
    let Some(broker) = start_broker(dir.path(), &pki, true) else {
        return;
    };
    let config = daemon_config(dir.path(), &broker, PASSWORD, "ca_file = \"ca.pem\"\n");
    let daemon = RunningDaemon::start_connecting(config).await;
    let failure = failure_where(&daemon, Option::is_some).await;
    assert_eq!(failure.kind, FailureKind::Tls, "{failure:?}");
    assert!(
        failure.message.contains("client certificate"),
        "the message points at the client certificate: {failure:?}"
    );
    daemon.shutdown().await;
}

/// The binary against a broker whose certificate is signed by a CA the daemon does not trust:
/// it logs a TLS error naming the setting to check, keeps retrying, and stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_broker_certificate_is_logged_and_retried_by_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_pki = pki(dir.path(), "", "the broker's CA");
    let other = pki(dir.path(), "other-", "a CA the daemon trusts");
    let Some(broker) = start_broker(dir.path(), &broker_pki, false) else {
        return;
    };
    let config = daemon_config(
        dir.path(),
        &broker,
        PASSWORD,
        &format!("ca_file = \"{}\"\n", other.ca.display()),
    );
    let mut daemon = BinaryDaemon::spawn(&config.source);
    let expected = format!(
        "cannot reach MQTT broker 127.0.0.1:{} over TLS as \"edgeflow-tls-{}\": TLS: the broker's \
         certificate is not signed by a trusted CA (check [mqtt.tls] ca_file)",
        broker.port, broker.port
    );
    let first = daemon.wait_for(&expected).await;
    assert!(first.contains("UnknownIssuer"), "{first}");
    // The next attempt fails the same way: the daemon retries instead of exiting.
    daemon.wait_for(&expected).await;
    let exit = daemon.sigterm();
    assert!(exit.success(), "clean exit after SIGTERM: {exit}");
}
