//! TLS to the broker: the `[mqtt.tls]` settings and a rustls `ClientConfig` built from them with
//! the ring crypto provider (ring cross-builds to armv7 with a plain C cross compiler; aws-lc
//! does not). Below both `config` and `mqtt`: it imports neither.
//!
//! The same function serves the config loader (so `edgeflow check` reports an unreadable or
//! malformed PEM file at its key) and the daemon's start-up (which builds the config again,
//! in case the files changed in between). Errors name the setting and the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// `[mqtt.tls]`: TLS (1.2 or 1.3, rustls with the ring provider) to the broker.
///
/// Paths are resolved by the loader: a relative path in the file is relative to the directory
/// of the configuration file, so these are the paths actually opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the CA certificates trusted to sign the broker's certificate; `None`: the
    /// system's trust store (e.g. Debian's `ca-certificates`).
    pub ca_file: Option<PathBuf>,
    /// Certificate and private key presented to the broker (mutual TLS); `None`: no client
    /// certificate.
    pub client_auth: Option<ClientAuthConfig>,
    /// The name the broker's certificate must be valid for; `None`: `host`. The name sent in
    /// SNI is always `host`.
    pub server_name: Option<String>,
}

/// `client_cert` and `client_key` of `[mqtt.tls]` (both or neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthConfig {
    /// PEM file with the client certificate, optionally followed by its intermediates.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1; not encrypted).
    pub key_file: PathBuf,
}

/// Why the TLS client configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A `[mqtt.tls]` setting or file that cannot be used.
    #[error("[mqtt] tls.{setting}{}: {reason}", show(path))]
    Setting {
        /// The setting at fault.
        setting: TlsSetting,
        /// The file, when the problem is in one.
        path: Option<PathBuf>,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the ring crypto provider (a build problem, not a configuration one).
    #[error("cannot set up TLS with the ring crypto provider: {reason}")]
    Provider {
        /// rustls' message.
        reason: String,
    },
}

/// The `[mqtt.tls]` setting an error is about (the loader reports the error at that key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSetting {
    /// `ca_file`, or the system trust store when it is not set.
    CaFile,
    /// `client_cert`.
    ClientCert,
    /// `client_key`.
    ClientKey,
    /// `server_name`.
    ServerName,
}

impl TlsSetting {
    /// The key as written in the file.
    pub fn key(self) -> &'static str {
        match self {
            TlsSetting::CaFile => "ca_file",
            TlsSetting::ClientCert => "client_cert",
            TlsSetting::ClientKey => "client_key",
            TlsSetting::ServerName => "server_name",
        }
    }
}

impl fmt::Display for TlsSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The crypto provider of every TLS connection edgeflow makes.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build the rustls client configuration of `[mqtt.tls]`: trust anchors from `ca_file` (or
/// the system's trust store), the client certificate and key if given, and verification of
/// the broker's certificate against `server_name` if given (else against the host rumqttc
/// connects to). TLS 1.2 and 1.3.
///
/// # Errors
///
/// [`TlsError::Setting`] naming the setting and the file when a file cannot be read, holds no
/// usable PEM item, a certificate is not a valid trust anchor, the key does not belong to the
/// certificate, or there is no `ca_file` and the system trust store is empty.
/// [`TlsError::Provider`] if rustls rejects the ring provider (not expected).
pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let roots = Arc::new(match &tls.ca_file {
        Some(path) => file_roots(path)?,
        None => system_roots()?,
    });
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|e| error(TlsSetting::CaFile, tls.ca_file.as_deref(), e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Provider {
            reason: e.to_string(),
        })?;
    let builder = match &tls.server_name {
        None => builder.with_webpki_verifier(webpki),
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|e| error(TlsSetting::ServerName, None, e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(VerifyAs {
                    name,
                    inner: webpki,
                }))
        }
    };
    let config = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let chain = certificates(TlsSetting::ClientCert, &auth.cert_file)?;
            let key = private_key(&auth.key_file)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => error(
                        TlsSetting::ClientKey,
                        Some(&auth.key_file),
                        format!(
                            "the key does not belong to the certificate in tls.client_cert \
                             ({})",
                            auth.cert_file.display()
                        ),
                    ),
                    other => error(
                        TlsSetting::ClientKey,
                        Some(&auth.key_file),
                        format!("the key cannot be used: {other}"),
                    ),
                })?
        }
    };
    Ok(Arc::new(config))
}

fn error(setting: TlsSetting, path: Option<&Path>, reason: String) -> TlsError {
    TlsError::Setting {
        setting,
        path: path.map(Path::to_path_buf),
        reason,
    }
}

fn read(setting: TlsSetting, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| error(setting, Some(path), format!("cannot read the file: {e}")))
}

/// Every `CERTIFICATE` block of a PEM file (other blocks, e.g. a key, are skipped).
fn certificates(
    setting: TlsSetting,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| error(setting, Some(path), format!("not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            setting,
            Some(path),
            "no certificate in the file (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")"
                .into(),
        ));
    }
    Ok(certs)
}

fn file_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in certificates(TlsSetting::CaFile, path)?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|e| {
            error(
                TlsSetting::CaFile,
                Some(path),
                format!(
                    "certificate #{} is not a usable CA certificate: {e}",
                    index + 1
                ),
            )
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(String::new, |e| format!(" ({e})"));
        return Err(error(
            TlsSetting::CaFile,
            None,
            format!(
                "not set, and the system trust store has no CA certificates{why}: install the \
                 ca-certificates package or set tls.ca_file to the broker's CA"
            ),
        ));
    }
    Ok(roots)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(TlsSetting::ClientKey, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let reason = match e {
            pem::Error::NoItemsFound if contains(&bytes, b"ENCRYPTED PRIVATE KEY") => {
                "the private key is encrypted; edgeflow needs an unencrypted key (e.g. \
                 `openssl pkey -in key.pem -out plain.pem`), readable only by its user"
                    .to_owned()
            }
            pem::Error::NoItemsFound => "no private key in the file (expected a PEM block \
                 \"-----BEGIN PRIVATE KEY-----\", \"-----BEGIN RSA PRIVATE KEY-----\" or \
                 \"-----BEGIN EC PRIVATE KEY-----\")"
                .to_owned(),
            other => format!("not a valid PEM file: {other}"),
        };
        error(TlsSetting::ClientKey, Some(path), reason)
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Verifies the broker's certificate for a configured name instead of the host connected to
/// (`[mqtt.tls] server_name`): e.g. a broker reached by IP address whose certificate names
/// only its DNS name. Everything else is the standard WebPKI verification.
#[derive(Debug)]
struct VerifyAs {
    name: ServerName<'static>,
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _host: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// The rustls error inside an I/O error, if any: tokio-rustls reports handshake and alert
/// failures as `io::Error`s wrapping the `rustls::Error`.
pub(crate) fn rustls_cause(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A connection error's TLS cause, worded for an operator, with the setting to check.
pub(crate) fn describe_tls(error: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert};
    let hint = match error {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            "the broker's certificate is not signed by a trusted CA (check [mqtt.tls] ca_file)"
        }
        rustls::Error::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. },
        ) => {
            "the broker's certificate is not valid for the name connected to (connect by a \
             name on the certificate, or set [mqtt.tls] server_name)"
        }
        rustls::Error::InvalidCertificate(
            Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet,
        )
        | rustls::Error::InvalidCertificate(Cert::NotValidYetContext { .. }) => {
            "the broker's certificate is outside its validity period (check the gateway's \
             clock and the certificate)"
        }
        rustls::Error::AlertReceived(Alert::CertificateRequired) => {
            "the broker requires a client certificate (set [mqtt.tls] client_cert and \
             client_key)"
        }
        rustls::Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::UnsupportedCertificate
            | Alert::AccessDenied,
        ) => "the broker rejected the client certificate (check [mqtt.tls] client_cert)",
        _ => "TLS handshake failed",
    };
    format!("TLS: {hint}: {error}")
}

/// Paths as shown in messages.
pub(crate) fn show(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" \"{}\"", p.display()))
        .unwrap_or_default()
}

/// Certificates for tests: a CA, a client certificate and its key, and the key of a server
/// certificate (to test a key that does not match), written as PEM files.
#[cfg(test)]
pub(crate) mod test_pki {
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };

    /// Paths of the PEM files written by [`write`].
    pub(crate) struct Files {
        pub(crate) ca: PathBuf,
        pub(crate) server_key: PathBuf,
        pub(crate) client_cert: PathBuf,
        pub(crate) client_key: PathBuf,
    }

    /// Generate a fresh PKI (CA named `ca_name`) into `dir`.
    pub(crate) fn write(dir: &Path, ca_name: &str) -> Files {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

        let mut server =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        // Only its key is used here (a key that belongs to another certificate); the
        // certificate is made anyway so the key is a real server key.
        server.signed_by(&server_key, &ca).unwrap();

        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "gateway-1");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &ca).unwrap();

        let file = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Files {
            ca: file("ca.pem", ca.pem()),
            server_key: file("server.key", server_key.serialize_pem()),
            client_cert: file("client.pem", client_cert.pem()),
            client_key: file("client.key", client_key.serialize_pem()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(files: &test_pki::Files) -> TlsConfig {
        TlsConfig {
            ca_file: Some(files.ca.clone()),
            client_auth: Some(ClientAuthConfig {
                cert_file: files.client_cert.clone(),
                key_file: files.client_key.clone(),
            }),
            server_name: Some("localhost".into()),
        }
    }

    fn tls_error(config: &TlsConfig) -> (TlsSetting, Option<PathBuf>, String) {
        match client_config(config) {
            Err(TlsError::Setting {
                setting,
                path,
                reason,
            }) => (setting, path, reason),
            Err(other) => panic!("expected a TLS setting error, got {other}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn generated_pki_builds_a_client_config_with_client_auth() {
        let dir = tempfile::tempdir().unwrap();
        let files = test_pki::write(dir.path(), "test CA");
        let config = client_config(&tls(&files)).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        assert!(config.enable_sni);
    }

    #[test]
    fn a_key_of_another_certificate_is_reported_at_client_key() {
        let dir = tempfile::tempdir().unwrap();
        let files = test_pki::write(dir.path(), "test CA");
        let mut config = tls(&files);
        if let Some(auth) = &mut config.client_auth {
            auth.key_file = files.server_key.clone();
        }
        let (setting, path, reason) = tls_error(&config);
        assert_eq!(setting, TlsSetting::ClientKey);
        assert_eq!(path, Some(files.server_key.clone()));
        assert!(
            reason.starts_with("the key does not belong to the certificate"),
            "{reason}"
        );
    }

    #[test]
    fn a_key_file_is_not_a_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = test_pki::write(dir.path(), "test CA");
        let config = TlsConfig {
            ca_file: Some(files.client_key.clone()),
            ..TlsConfig::default()
        };
        let (setting, _, reason) = tls_error(&config);
        assert_eq!(setting, TlsSetting::CaFile);
        assert!(reason.starts_with("no certificate in the file"), "{reason}");
    }

    #[test]
    fn an_encrypted_key_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let files = test_pki::write(dir.path(), "test CA");
        let encrypted = dir.path().join("encrypted.key");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let mut config = tls(&files);
        if let Some(auth) = &mut config.client_auth {
            auth.key_file = encrypted;
        }
        let (setting, _, reason) = tls_error(&config);
        assert_eq!(setting, TlsSetting::ClientKey);
        assert!(
            reason.starts_with("the private key is encrypted"),
            "{reason}"
        );
    }

    #[test]
    fn error_names_setting_and_file() {
        let error = TlsError::Setting {
            setting: TlsSetting::CaFile,
            path: Some("/etc/edgeflow/ca.pem".into()),
            reason: "cannot read the file: No such file or directory (os error 2)".into(),
        };
        assert_eq!(
            error.to_string(),
            "[mqtt] tls.ca_file \"/etc/edgeflow/ca.pem\": cannot read the file: No such file or \
             directory (os error 2)"
        );
    }

    #[test]
    fn tls_causes_are_worded_with_the_setting_to_check() {
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(describe_tls(&unknown).contains("check [mqtt.tls] ca_file"));
        let required = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(describe_tls(&required).contains("set [mqtt.tls] client_cert and client_key"));
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown.clone());
        assert_eq!(rustls_cause(&wrapped), Some(&unknown));
    }
}
