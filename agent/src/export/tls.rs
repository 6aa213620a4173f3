//! TLS to the OTLP backend for `https://` endpoints, the same for gRPC and
//! HTTP/protobuf: the collector's certificate is checked against the CA in
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` when set, else against the system's
//! trust store; `OTEL_EXPORTER_OTLP_CLIENT_{CERTIFICATE,KEY}` add a client
//! certificate for collectors that require mutual TLS. Files are read once,
//! at start-up, so a bad path or PEM stops the agent with the variable's
//! name instead of failing every export later.
use std::{path::Path, sync::Arc};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
};

/// Where the PEM files come from (the variable or config key named in
/// errors is the one the user set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) the collector's certificate must chain to.
    pub ca: Option<NamedPath>,
    pub client_certificate: Option<NamedPath>,
    pub client_key: Option<NamedPath>,
}

/// A file path and the setting it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPath {
    pub setting: String,
    pub path: String,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_certificate.is_none() && self.client_key.is_none()
    }
}

/// Opens TCP connections and, for `https://` URIs, TLS over them; `h2` is
/// offered by ALPN for gRPC, `http/1.1` for HTTP/protobuf.
pub type Connector = HttpsConnector<HttpConnector>;

pub fn connector(files: &TlsFiles, http2: bool) -> Result<Connector, String> {
    let config = client_config(files)?;
    let mut tcp = HttpConnector::new();
    // The TLS layer decides per URI; plain http:// still works.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    Ok(if http2 {
        builder.enable_http2().wrap_connector(tcp)
    } else {
        builder.enable_http1().wrap_connector(tcp)
    })
}

/// Reads and checks the files now, so that a bad one stops start-up with
/// the setting's name rather than failing every export later.
pub fn check(files: &TlsFiles, urls: &[&str]) -> Result<(), String> {
    client_config(files)?;
    if !files.is_empty() && !urls.iter().any(|u| u.starts_with("https://")) {
        tracing::warn!(
            "OTLP certificate files are set but the endpoint `{}` is not https://; \
             they are not used",
            urls.first().copied().unwrap_or_default()
        );
    }
    Ok(())
}

fn client_config(files: &TlsFiles) -> Result<ClientConfig, String> {
    let roots = match &files.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let certs = certificates(ca)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "{}: `{}` holds no usable CA certificate",
                    ca.setting, ca.path
                ));
            }
            roots
        }
        None => system_roots(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots);
    match (&files.client_certificate, &files.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| {
                format!(
                    "{} and {}: the client certificate and key do not go together ({e})",
                    cert.setting, key.setting
                )
            }),
        (Some(one), None) | (None, Some(one)) => Err(format!(
            "{} is set but not its pair: mutual TLS needs both \
             OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY",
            one.setting
        )),
    }
}

/// The system's trust store; unreadable entries are skipped (an https
/// endpoint whose CA is missing then fails at the handshake, which the
/// export error names).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    if let Some(e) = found.errors.first() {
        tracing::debug!("system CA certificates: {e}");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

fn read(file: &NamedPath) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(&file.path))
        .map_err(|e| format!("{}: cannot read `{}`: {e}", file.setting, file.path))
}

fn certificates(file: &NamedPath) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: `{}` is not PEM ({e})", file.setting, file.path))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: `{}` holds no PEM certificate",
            file.setting, file.path
        ));
    }
    Ok(certs)
}

fn private_key(file: &NamedPath) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "{}: `{}` holds no PEM private key ({e})",
            file.setting, file.path
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(setting: &str, path: &Path) -> NamedPath {
        NamedPath {
            setting: setting.into(),
            path: path.display().to_string(),
        }
    }

    #[test]
    fn bad_files_are_named_with_their_setting() {
        let dir = std::env::temp_dir().join(format!("seam-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let missing = dir.join("missing.pem");

        let err = |files: TlsFiles| client_config(&files).unwrap_err();
        let e = err(TlsFiles {
            ca: Some(named("OTEL_EXPORTER_OTLP_CERTIFICATE", &missing)),
            ..Default::default()
        });
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read")
                && e.contains("missing.pem"),
            "{e}"
        );
        let e = err(TlsFiles {
            ca: Some(named("export.certificate", &junk)),
            ..Default::default()
        });
        assert!(
            e.contains("export.certificate") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = err(TlsFiles {
            client_key: Some(named("OTEL_EXPORTER_OTLP_CLIENT_KEY", &junk)),
            ..Default::default()
        });
        assert!(e.contains("needs both"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_files_means_system_roots() {
        assert!(client_config(&TlsFiles::default()).is_ok());
    }
}
