//! A throwaway certificate authority for TLS tests, made with the openssl
//! command: a CA, a server certificate for 127.0.0.1 and a client
//! certificate signed by it, and PEM files in a scratch directory.
use std::{path::PathBuf, process::Command, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};

use crate::procs::{scratch_dir, unique};

pub struct Pki {
    pub dir: PathBuf,
}

fn openssl(dir: &PathBuf, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Pki {
    /// A new CA with `server.pem`/`server.key` (serverAuth, IP 127.0.0.1)
    /// and `client.pem`/`client.key` (clientAuth) signed by it.
    pub fn new() -> Self {
        let dir = scratch_dir().join(format!("pki-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
        ca.extend(EC);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=seam test CA",
        ]);
        openssl(&dir, &ca);
        for (name, usage, san) in [
            ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
            ("client", "clientAuth", ""),
        ] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let mut req = vec!["req", "-nodes"];
            req.extend(EC);
            let subject = format!("/CN=seam test {name}");
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
            openssl(&dir, &req);
            std::fs::write(
                dir.join(&ext),
                format!(
                    "{san}basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                     extendedKeyUsage={usage}\n"
                ),
            )
            .unwrap();
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &pem,
                    "-extfile",
                    &ext,
                ],
            );
        }
        Self { dir }
    }

    /// The path of one of the PEM files as a string (for variables).
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn certs(&self, file: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(self.dir.join(file))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A server configuration presenting `server.pem`, offering h2 and
    /// HTTP/1.1, and requiring a client certificate from this CA when
    /// `mutual`.
    pub fn server_config(&self, mutual: bool) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if mutual {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(self.certs("ca.pem"));
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::from_pem_file(self.dir.join("server.key")).unwrap();
        let mut config = builder
            .with_single_cert(self.certs("server.pem"), key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
