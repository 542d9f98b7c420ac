//! SASL mechanisms for the c2s client: SCRAM-SHA-1 (RFC 5802) and PLAIN (RFC 4616).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::{Digest, Sha1};

type HmacSha1 = Hmac<Sha1>;

pub fn plain_initial(username: &str, password: &str) -> String {
    B64.encode(format!("\0{username}\0{password}"))
}

/// The state of one SCRAM-SHA-1 exchange.
pub struct Scram {
    client_first_bare: String,
    cnonce: String,
    password: String,
    server_signature: Option<Vec<u8>>,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 5802 saslname: `=` and `,` escaped.
fn saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

impl Scram {
    pub fn new(username: &str, password: &str, cnonce: String) -> Scram {
        Scram {
            client_first_bare: format!("n={},r={cnonce}", saslname(username)),
            cnonce,
            password: password.to_owned(),
            server_signature: None,
        }
    }

    /// The base64 client-first-message (no channel binding: gs2 header `n,,`).
    pub fn client_first(&self) -> String {
        B64.encode(format!("n,,{}", self.client_first_bare))
    }

    /// Takes the base64 server-first-message, returns the base64 client-final-message.
    pub fn client_final(&mut self, server_first_b64: &str) -> Result<String, String> {
        let server_first = B64
            .decode(server_first_b64.trim())
            .map_err(|e| format!("server-first is not base64: {e}"))?;
        let server_first =
            String::from_utf8(server_first).map_err(|_| "server-first is not UTF-8".to_owned())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in server_first.split(',') {
            if let Some(v) = part.strip_prefix("r=") {
                nonce = Some(v.to_owned());
            } else if let Some(v) = part.strip_prefix("s=") {
                salt = Some(B64.decode(v).map_err(|e| format!("bad salt: {e}"))?);
            } else if let Some(v) = part.strip_prefix("i=") {
                iterations = Some(
                    v.parse::<u32>()
                        .map_err(|e| format!("bad iterations: {e}"))?,
                );
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("incomplete server-first-message {server_first:?}"));
        };
        if !nonce.starts_with(&self.cnonce) {
            return Err("the server nonce does not extend ours".into());
        }
        if !(1..=1_000_000).contains(&iterations) {
            return Err(format!("unreasonable iteration count {iterations}"));
        }
        let mut salted = [0u8; 20];
        pbkdf2::pbkdf2_hmac::<Sha1>(self.password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha1::digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        self.server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(B64.encode(format!("{without_proof},p={}", B64.encode(proof))))
    }

    /// Checks the server's final message (`v=...`), proving the server knew the password.
    pub fn verify_server(&self, server_final_b64: &str) -> Result<(), String> {
        let text = B64
            .decode(server_final_b64.trim())
            .map_err(|e| format!("server-final is not base64: {e}"))?;
        let text = String::from_utf8_lossy(&text);
        let v = text
            .strip_prefix("v=")
            .ok_or_else(|| format!("server-final without verifier: {text:?}"))?;
        let v = B64.decode(v).map_err(|e| format!("bad verifier: {e}"))?;
        if Some(v) == self.server_signature {
            Ok(())
        } else {
            Err("the server signature does not match".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5802 section 5: user "user", password "pencil".
    #[test]
    fn rfc5802_example() {
        let mut s = Scram::new("user", "pencil", "fyko+d2lbbFgONRv9qkxdawL".into());
        assert_eq!(
            B64.decode(s.client_first()).unwrap(),
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
        );
        let server_first =
            B64.encode("r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
        let fin = s.client_final(&server_first).unwrap();
        assert_eq!(
            String::from_utf8(B64.decode(fin).unwrap()).unwrap(),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        s.verify_server(&B64.encode("v=rmF9pqV8S7suAoZWja4dJRkFsKQ="))
            .unwrap();
        assert!(s.verify_server(&B64.encode("v=AAAA")).is_err());
    }
}
