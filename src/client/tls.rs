//! STARTTLS for the c2s client (RFC 6120 section 5): when to negotiate it, and the rustls
//! connector (system roots, or any certificate for private test servers when asked).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::xml::Element;

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

/// When the client negotiates STARTTLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// When the server requires it (`<required/>` in `<starttls/>`); plaintext otherwise.
    #[default]
    Auto,
    /// Whenever the server offers it; an error when it does not.
    Always,
    /// Never; an error against a server that requires it.
    Never,
}

/// Whether to negotiate TLS given the server's first `<stream:features/>`, or why not possible.
pub fn decide(mode: TlsMode, features: &Element) -> Result<bool, String> {
    let offer = features.get_child("starttls", NS_TLS);
    let required = offer.is_some_and(|o| o.get_child("required", NS_TLS).is_some());
    match mode {
        TlsMode::Auto => Ok(required),
        TlsMode::Always if offer.is_some() => Ok(true),
        TlsMode::Always => Err("the server does not offer STARTTLS".into()),
        TlsMode::Never if required => {
            Err("the server requires STARTTLS (use --starttls auto or always)".into())
        }
        TlsMode::Never => Ok(false),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The connector: verifying against the system's roots, or (`insecure`) accepting any
/// certificate, for private servers with self-signed ones. Built once per kind.
pub fn connector(insecure: bool) -> Result<TlsConnector, String> {
    static VERIFYING: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    static ANY: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    let cell = if insecure { &ANY } else { &VERIFYING };
    cell.get_or_init(|| build(insecure)).clone()
}

fn build(insecure: bool) -> Result<TlsConnector, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err("no trusted root certificates found on this system".into());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The TLS server name for an XMPP domain.
pub fn server_name(domain: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(domain.to_owned()).map_err(|e| format!("{domain}: {e}"))
}

/// Accepts any certificate (signatures are still checked, so the handshake is sound).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(xml: &str) -> Element {
        crate::xml::parse_element(xml, crate::xml::Limits::default()).unwrap()
    }

    #[test]
    fn rfc_6120_5_3_1_required_starttls_decides_auto() {
        let required = features(&format!(
            "<features xmlns='http://etherx.jabber.org/streams'><starttls xmlns='{NS_TLS}'><required/></starttls></features>"
        ));
        let optional = features(&format!(
            "<features xmlns='http://etherx.jabber.org/streams'><starttls xmlns='{NS_TLS}'/></features>"
        ));
        let none = features("<features xmlns='http://etherx.jabber.org/streams'/>");
        assert_eq!(decide(TlsMode::Auto, &required), Ok(true));
        assert_eq!(decide(TlsMode::Auto, &optional), Ok(false));
        assert_eq!(decide(TlsMode::Auto, &none), Ok(false));
        assert_eq!(decide(TlsMode::Always, &optional), Ok(true));
        assert!(decide(TlsMode::Always, &none).is_err());
        assert!(decide(TlsMode::Never, &required).is_err());
        assert_eq!(decide(TlsMode::Never, &optional), Ok(false));
    }
}
