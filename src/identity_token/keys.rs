//! Identity keys: one private key per PEM file of the key directory, its `kid` the file's
//! name without `.pem`. Keys are ordered by file name and the last one signs, so a newer key
//! is named to sort later (`2026-01.pem`, `2026-07.pem`); every key is published until its
//! file is removed, so tokens signed before a rotation stay verifiable until they expire.
//! P-256 keys sign ES256, RSA keys of 2048 to 4096 bits RS256; anything else is refused
//! with the file's name.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

/// Largest key file read: a 4096-bit RSA key in PEM is about 3.3 KiB.
const MAX_FILE: u64 = 64 * 1024;
/// Longest `kid` (file name without `.pem`).
const MAX_KID: usize = 64;
/// prime256v1 (P-256), the named curve of a SEC1 key.
const P256_OID: &str = "1.2.840.10045.3.1.7";

/// A JWS algorithm this service signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Es256,
    Rs256,
}

impl Alg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// One signing key with its public half as a JWK.
pub(crate) struct Key {
    pub(crate) kid: String,
    pair: Pair,
    jwk: Value,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} {})", self.kid, self.alg().name())
    }
}

impl Key {
    pub(crate) fn alg(&self) -> Alg {
        match self.pair {
            Pair::Ec(_) => Alg::Es256,
            Pair::Rsa(_) => Alg::Rs256,
        }
    }

    /// The JWS signature of `message`: ES256 as the raw `r || s` JOSE asks for, RS256 as
    /// PKCS#1 v1.5 with SHA-256.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ec(k) => Ok(k.sign(&rng, message)?.as_ref().to_vec()),
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)?;
                Ok(sig)
            }
        }
    }

    /// The public key as a JWK (RFC 7517/7518): EC coordinates always 32 bytes, RSA
    /// integers without leading zeros.
    pub(crate) fn jwk(&self) -> &Value {
        &self.jwk
    }
}

/// The keys of a directory, in file name order: the last one signs.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
    /// `{"keys": [...]}`, rendered once.
    jwks: Bytes,
}

impl KeySet {
    /// The key new tokens are signed with, when there is any.
    pub(crate) fn signing(&self) -> Option<&Key> {
        self.keys.last()
    }

    pub(crate) fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The JSON Web Key Set of every key.
    pub(crate) fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    fn new(keys: Vec<Key>) -> KeySet {
        let doc = json!({"keys": keys.iter().map(Key::jwk).collect::<Vec<_>>()});
        KeySet {
            jwks: Bytes::from(doc.to_string()),
            keys,
        }
    }
}

/// A key directory that cannot be used: the file (or the directory) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub(crate) struct KeyError {
    pub(crate) file: PathBuf,
    pub(crate) message: String,
}

/// The `*.pem` files of `dir` (not hidden ones: Kubernetes keeps a Secret's data in
/// `..data`), in name order, with their contents.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, KeyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| KeyError {
        file: dir.to_owned(),
        message: format!("cannot read the identity key directory: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".pem") && p.is_file()
        })
        .collect();
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let err = |message: String| KeyError {
            file: path.clone(),
            message,
        };
        let len = std::fs::metadata(&path)
            .map_err(|e| err(format!("cannot read: {e}")))?
            .len();
        if len > MAX_FILE {
            return Err(err(format!(
                "{len} bytes: larger than any key file ({MAX_FILE} bytes at most)"
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| err(format!("cannot read: {e}")))?;
        out.push((path, bytes));
    }
    Ok(out)
}

/// A digest of a file set, to tell a real change from a touch.
pub(crate) fn fingerprint(files: &[(PathBuf, Vec<u8>)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}

/// Every file as a key; the first that is not one fails the whole set.
pub(crate) fn parse_files(files: &[(PathBuf, Vec<u8>)]) -> Result<KeySet, KeyError> {
    let mut keys = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        let err = |message: String| KeyError {
            file: path.clone(),
            message,
        };
        let kid = kid_of(path).map_err(err)?;
        let pair = parse_key(bytes).map_err(err)?;
        let jwk = jwk_of(&pair, &kid);
        keys.push(Key { kid, pair, jwk });
    }
    Ok(KeySet::new(keys))
}

fn kid_of(path: &Path) -> Result<String, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let kid = name.strip_suffix(".pem").unwrap_or(name);
    let ok = !kid.is_empty()
        && kid.len() <= MAX_KID
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(kid.to_string())
    } else {
        Err(format!(
            "the file name gives the key id: it must be 1 to {MAX_KID} letters, digits, '-', '_' or '.' before .pem"
        ))
    }
}

/// The one private key of a PEM file: PKCS#8 (`PRIVATE KEY`, what `openssl genpkey`
/// writes), SEC1 (`EC PRIVATE KEY`, `openssl ecparam -genkey`) or PKCS#1 (`RSA PRIVATE KEY`).
fn parse_key(text: &[u8]) -> Result<Pair, String> {
    let blocks = pem::parse_many(text)
        .map_err(|e| format!("not a PEM file ({e}): expected a private key"))?;
    // `openssl ecparam -genkey` writes the curve's parameters first.
    let keys: Vec<&pem::Pem> = blocks
        .iter()
        .filter(|b| b.tag() != "EC PARAMETERS")
        .collect();
    match keys.as_slice() {
        [] => Err("no PEM block in the file: expected a private key".into()),
        [one] => pair_of(one.tag(), one.contents()),
        _ => Err(format!(
            "{} PEM blocks: expected one private key per file",
            keys.len()
        )),
    }
}

fn pair_of(tag: &str, der: &[u8]) -> Result<Pair, String> {
    let rng = SystemRandom::new();
    let p256 = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    match tag {
        "PRIVATE KEY" => match EcdsaKeyPair::from_pkcs8(p256, der, &rng) {
            Ok(k) => Ok(Pair::Ec(k)),
            Err(e) if e.to_string() == "WrongAlgorithm" => RsaKeyPair::from_pkcs8(der)
                .map(Pair::Rsa)
                .map_err(|e| rsa_refused(&e.to_string())),
            Err(e) => Err(format!("a P-256 key that cannot be used ({e})")),
        },
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(der)
            .map(Pair::Rsa)
            .map_err(|e| rsa_refused(&e.to_string())),
        "EC PRIVATE KEY" => sec1_pair(der, &rng),
        "ENCRYPTED PRIVATE KEY" => Err(
            "an encrypted private key: store it decrypted (openssl pkey -in FILE -out FILE)".into(),
        ),
        other => Err(format!("a {other} block, not a private key")),
    }
}

fn rsa_refused(why: &str) -> String {
    match why {
        "WrongAlgorithm" => "not a P-256 (ES256) or RSA (RS256) private key".into(),
        "TooSmall" => "an RSA key shorter than 2048 bits".into(),
        "TooLarge" => "an RSA key longer than 4096 bits".into(),
        other => format!("an RSA key that cannot be used ({other})"),
    }
}

/// A SEC1 key: it must name P-256 and carry its public key, as OpenSSL writes it.
fn sec1_pair(der: &[u8], rng: &SystemRandom) -> Result<Pair, String> {
    let key = sec1::EcPrivateKey::try_from(der)
        .map_err(|e| format!("an EC PRIVATE KEY block that is not valid SEC1 DER ({e})"))?;
    let curve = key.parameters.and_then(|p| p.named_curve());
    match curve {
        Some(oid) if oid.to_string() == P256_OID => {}
        Some(oid) => return Err(format!("an EC key on curve {oid}, not P-256 (prime256v1)")),
        None => return Err("an EC key that does not name its curve (P-256 expected)".into()),
    }
    let public = key
        .public_key
        .ok_or("an EC key without its public key: convert it with openssl pkcs8 -topk8 -nocrypt")?;
    EcdsaKeyPair::from_private_key_and_public_key(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key.private_key,
        public,
        rng,
    )
    .map(Pair::Ec)
    .map_err(|e| format!("a P-256 key that cannot be used ({e})"))
}

fn jwk_of(pair: &Pair, kid: &str) -> Value {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    match pair {
        Pair::Ec(k) => {
            // The uncompressed point: 0x04, then x and y of 32 bytes each.
            let point = k.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                   "kid": kid, "use": "sig", "alg": "ES256"})
        }
        Pair::Rsa(k) => {
            let c: PublicKeyComponents<Vec<u8>> = k.public().into();
            json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e),
                   "kid": kid, "use": "sig", "alg": "RS256"})
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/identity")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    /// Parses `files` (name, fixture file) as a directory listing would hand them over.
    pub(crate) fn set(files: &[(&str, &str)]) -> Result<KeySet, KeyError> {
        let files: Vec<(PathBuf, Vec<u8>)> = files
            .iter()
            .map(|(n, f)| (PathBuf::from(format!("/keys/{n}")), fixture(f).into_bytes()))
            .collect();
        parse_files(&files)
    }

    fn b64(s: &Value) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s.as_str().unwrap()).unwrap()
    }

    /// Verifies `sig` over `msg` with the public key of `jwk` alone.
    pub(crate) fn verify_with_jwk(jwk: &Value, msg: &[u8], sig: &[u8]) -> bool {
        match jwk["kty"].as_str() {
            Some("EC") => {
                let mut point = vec![4u8];
                point.extend(b64(&jwk["x"]));
                point.extend(b64(&jwk["y"]));
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, sig)
                    .is_ok()
            }
            Some("RSA") => signature::RsaPublicKeyComponents {
                n: b64(&jwk["n"]),
                e: b64(&jwk["e"]),
            }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
            .is_ok(),
            _ => false,
        }
    }

    #[test]
    fn the_last_file_signs_and_every_key_is_published() {
        let s = set(&[
            ("2026-01.pem", "ec-leading-zero.pem"),
            ("2026-03.pem", "ec-sec1.pem"),
            ("2026-05.pem", "rsa-3072-pkcs8.pem"),
            ("2026-07.pem", "rsa-2048.pem"),
        ])
        .unwrap();
        let signing = s.signing().unwrap();
        assert_eq!(
            (signing.kid.as_str(), signing.alg()),
            ("2026-07", Alg::Rs256)
        );
        let jwks: Value = serde_json::from_slice(&s.jwks()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        let kids: Vec<(&str, &str)> = keys
            .iter()
            .map(|k| (k["kid"].as_str().unwrap(), k["alg"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kids,
            [
                ("2026-01", "ES256"),
                ("2026-03", "ES256"),
                ("2026-05", "RS256"),
                ("2026-07", "RS256")
            ]
        );
        // Each published key verifies what its private half signs, and no other key does.
        for (i, key) in s.keys().iter().enumerate() {
            let sig = key.sign(b"message").unwrap();
            for (j, jwk) in keys.iter().enumerate() {
                assert_eq!(verify_with_jwk(jwk, b"message", &sig), i == j, "{i} {j}");
            }
            assert!(!verify_with_jwk(&keys[i], b"other message", &sig));
        }
        assert!(set(&[]).unwrap().signing().is_none());
        assert_eq!(&set(&[]).unwrap().jwks()[..], br#"{"keys":[]}"#);
    }

    #[test]
    fn ec_coordinates_keep_their_leading_zeros() {
        let s = set(&[("a.pem", "ec-leading-zero.pem")]).unwrap();
        let jwk = s.keys()[0].jwk();
        let (x, y) = (b64(&jwk["x"]), b64(&jwk["y"]));
        assert_eq!((x.len(), y.len(), x[0]), (32, 32, 0));
        assert_eq!(s.keys()[0].sign(b"m").unwrap().len(), 64, "raw r || s");
    }

    #[test]
    fn a_file_that_is_no_usable_key_is_refused_by_name() {
        let cases = [
            (
                "rsa-1024.pem",
                "/keys/k.pem: an RSA key shorter than 2048 bits",
            ),
            (
                "ec-p384.pem",
                "/keys/k.pem: not a P-256 (ES256) or RSA (RS256) private key",
            ),
            (
                "ed25519.pem",
                "/keys/k.pem: not a P-256 (ES256) or RSA (RS256) private key",
            ),
            (
                "public.pem",
                "/keys/k.pem: a PUBLIC KEY block, not a private key",
            ),
            (
                "README.md",
                "/keys/k.pem: no PEM block in the file: expected a private key",
            ),
        ];
        for (file, want) in cases {
            assert_eq!(
                set(&[("k.pem", file)]).unwrap_err().to_string(),
                want,
                "{file}"
            );
        }
        // One bad file fails the whole set, whichever its place.
        let err = set(&[("a.pem", "ec-sec1.pem"), ("b.pem", "rsa-1024.pem")]).unwrap_err();
        assert_eq!(err.file, PathBuf::from("/keys/b.pem"));
        let err = set(&[("bad name!.pem", "ec-sec1.pem")]).unwrap_err();
        assert!(
            err.message.starts_with("the file name gives the key id"),
            "{err}"
        );
        let two = format!("{}{}", fixture("ec-sec1.pem"), fixture("rsa-2048.pem"));
        let parsed = parse_files(&[(PathBuf::from("/keys/two.pem"), two.into_bytes())]);
        assert_eq!(
            parsed.unwrap_err().to_string(),
            "/keys/two.pem: 2 PEM blocks: expected one private key per file"
        );
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let parsed = parse_files(&[(PathBuf::from("/keys/e.pem"), encrypted.as_bytes().to_vec())]);
        assert!(parsed
            .unwrap_err()
            .message
            .starts_with("an encrypted private key"));
    }
}
