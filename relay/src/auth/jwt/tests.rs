//! Table-driven tests of JWT verification: every malformed, forged, expired or misused
//! token with its expected outcome.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use tidewire_shared::StreamName;

use super::testing::*;
use super::*;

/// Which configured verifier a row runs against.
#[derive(Debug, Clone, Copy)]
enum Relay {
    Hs256,
    Rs256,
    EdDsa,
    /// HS256 with `--jwt-audience tidewire --jwt-issuer https://auth.test`.
    Hs256AudIss,
}

fn verifier(relay: Relay) -> JwtVerifier {
    match relay {
        Relay::Hs256 => JwtVerifier::hs256(SECRET),
        Relay::Rs256 => JwtVerifier::public_key(JwtAlgorithm::Rs256, RSA_PUBLIC),
        Relay::EdDsa => JwtVerifier::public_key(JwtAlgorithm::EdDsa, ED_PUBLIC),
        Relay::Hs256AudIss => JwtVerifier::hs256(SECRET).map(|verifier| {
            verifier
                .with_audience(Some("tidewire".into()))
                .with_issuer(Some("https://auth.test".into()))
        }),
    }
    .expect("test verifier")
}

fn malformed(reason: &'static str) -> Result<(), JwtError> {
    Err(JwtError::Malformed(reason))
}

fn algorithm(expected: &'static str) -> Result<(), JwtError> {
    Err(JwtError::Algorithm { expected })
}

/// One row per bad-input case of TESTING.md (plus the valid tokens), each with its answer.
#[test]
fn token_table() {
    let hs_header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let payload = claims().to_string();
    let valid_signature = hs256(&claims())
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let other_rsa = EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE).expect("other rsa key");
    let tampered = {
        let mut parts: Vec<String> = hs256(&claims()).split('.').map(str::to_owned).collect();
        parts[1] =
            b64(&claims_with(json!({"tidewire": {"read": ["*"], "write": ["*"]}})).to_string());
        parts.join(".")
    };
    let padded = format!("{}=", hs256(&claims()));
    let huge = hs256(&claims_with(json!({"pad": "x".repeat(16 * 1024)})));
    let aud_iss = |aud: Value, iss: &str| claims_with(json!({"aud": aud, "iss": iss}));

    #[rustfmt::skip]
    let rows: Vec<(&str, Relay, String, Result<(), JwtError>)> = vec![
        ("valid HS256", Relay::Hs256, hs256(&claims()), Ok(())),
        ("valid RS256", Relay::Rs256, rs256(&claims()), Ok(())),
        ("valid EdDSA", Relay::EdDsa, eddsa(&claims()), Ok(())),
        ("alg none, empty signature", Relay::Hs256, forge(r#"{"alg":"none"}"#, &payload, ""), malformed("empty signature")),
        ("alg none with a signature", Relay::Hs256, forge(r#"{"alg":"none"}"#, &payload, &valid_signature), algorithm("HS256")),
        ("alg None", Relay::Hs256, forge(r#"{"alg":"None"}"#, &payload, &valid_signature), algorithm("HS256")),
        ("alg NONE", Relay::Rs256, forge(r#"{"alg":"NONE"}"#, &payload, "AAAA"), algorithm("RS256")),
        ("alg nOnE on EdDSA", Relay::EdDsa, forge(r#"{"alg":"nOnE"}"#, &payload, "AAAA"), algorithm("EdDSA")),
        ("no alg header", Relay::Hs256, forge(r#"{"typ":"JWT"}"#, &payload, &valid_signature), algorithm("HS256")),
        ("alg hs256 (wrong case)", Relay::Hs256, forge(r#"{"alg":"hs256"}"#, &payload, &valid_signature), algorithm("HS256")),
        ("empty signature", Relay::Hs256, forge(hs_header, &payload, ""), malformed("empty signature")),
        ("HS256 signed with the RSA public key (confusion)", Relay::Rs256,
            sign_raw(&json!({"alg": "HS256"}), &claims(), &EncodingKey::from_secret(RSA_PUBLIC), Algorithm::HS256), algorithm("RS256")),
        ("RS256 token on a HS256 relay", Relay::Hs256, rs256(&claims()), algorithm("HS256")),
        ("EdDSA token on a RS256 relay", Relay::Rs256, eddsa(&claims()), algorithm("RS256")),
        ("HS256 token on an EdDSA relay", Relay::EdDsa, hs256(&claims()), algorithm("EdDSA")),
        ("unknown kid, other key", Relay::Rs256,
            sign_raw(&json!({"alg": "RS256", "kid": "attacker"}), &claims(), &other_rsa, Algorithm::RS256), Err(JwtError::Signature)),
        ("kid with the right key (kid ignored)", Relay::Rs256,
            sign_raw(&json!({"alg": "RS256", "kid": "../../etc/passwd"}), &claims(), &EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("key"), Algorithm::RS256), Ok(())),
        ("wrong HS256 secret", Relay::Hs256,
            sign_raw(&json!({"alg": "HS256"}), &claims(), &EncodingKey::from_secret(b"another-secret"), Algorithm::HS256), Err(JwtError::Signature)),
        ("tampered payload", Relay::Hs256, tampered, Err(JwtError::Signature)),
        ("truncated signature", Relay::Hs256, forge(hs_header, &payload, &valid_signature[..10]), Err(JwtError::Signature)),
        ("crit header", Relay::Hs256,
            sign_raw(&json!({"alg": "HS256", "crit": ["b64"], "b64": false}), &claims(), &EncodingKey::from_secret(SECRET), Algorithm::HS256), Err(JwtError::Critical)),
        ("missing exp", Relay::Hs256, hs256(&claims_with(json!({"exp": null}))), Err(JwtError::MissingExpiry)),
        ("exp as a string", Relay::Hs256, hs256(&claims_with(json!({"exp": "tomorrow"}))), Err(JwtError::Claims("exp is not a NumericDate".into()))),
        ("negative exp", Relay::Hs256, hs256(&claims_with(json!({"exp": -1}))), Err(JwtError::Claims("exp is not a NumericDate".into()))),
        ("expired exp", Relay::Hs256, hs256(&claims_with(json!({"exp": NOW - 1}))), Err(JwtError::Expired)),
        ("exp equal to now (no leeway)", Relay::Hs256, hs256(&claims_with(json!({"exp": NOW}))), Err(JwtError::Expired)),
        ("exp one second ahead", Relay::Hs256, hs256(&claims_with(json!({"exp": NOW + 1}))), Ok(())),
        ("fractional exp", Relay::Hs256, hs256(&claims_with(json!({"exp": NOW as f64 + 30.5}))), Ok(())),
        ("future nbf", Relay::Hs256, hs256(&claims_with(json!({"nbf": NOW + 60}))), Err(JwtError::NotYetValid)),
        ("nbf just past the leeway", Relay::Hs256, hs256(&claims_with(json!({"nbf": NOW + NBF_LEEWAY_SECS + 1}))), Err(JwtError::NotYetValid)),
        ("nbf within the leeway", Relay::Hs256, hs256(&claims_with(json!({"nbf": NOW + NBF_LEEWAY_SECS}))), Ok(())),
        ("past nbf", Relay::Hs256, hs256(&claims_with(json!({"nbf": NOW - 60}))), Ok(())),
        ("right aud and iss", Relay::Hs256AudIss, hs256(&aud_iss(json!("tidewire"), "https://auth.test")), Ok(())),
        ("aud array containing ours", Relay::Hs256AudIss, hs256(&aud_iss(json!(["other", "tidewire"]), "https://auth.test")), Ok(())),
        ("wrong aud", Relay::Hs256AudIss, hs256(&aud_iss(json!("other"), "https://auth.test")), Err(JwtError::Audience)),
        ("missing aud", Relay::Hs256AudIss, hs256(&claims_with(json!({"iss": "https://auth.test"}))), Err(JwtError::Audience)),
        ("wrong iss", Relay::Hs256AudIss, hs256(&aud_iss(json!("tidewire"), "https://evil.test")), Err(JwtError::Issuer)),
        ("aud ignored when not configured", Relay::Hs256, hs256(&aud_iss(json!("anything"), "anyone")), Ok(())),
        ("bad base64 in the header", Relay::Hs256, format!("eyJ!bGc.{}.{valid_signature}", b64(&payload)), malformed("a part is not base64url")),
        ("base64 padding", Relay::Hs256, padded, malformed("a part is not base64url")),
        ("header is not JSON", Relay::Hs256, forge("not json", &payload, &valid_signature), malformed("header is not a JSON object")),
        ("payload is a JSON array", Relay::Hs256,
            sign_raw(&json!({"alg": "HS256"}), &json!([1, 2]), &EncodingKey::from_secret(SECRET), Algorithm::HS256), malformed("header or payload is not valid JSON")),
        ("2-part token", Relay::Hs256, format!("{}.{}", b64(hs_header), b64(&payload)), malformed("expected three dot-separated parts")),
        ("4-part token", Relay::Hs256, format!("{}.{valid_signature}", hs256(&claims())), malformed("expected three dot-separated parts")),
        ("16 KiB token", Relay::Hs256, huge, Err(JwtError::TooLong { max: MAX_TOKEN_BYTES })),
        ("garbage", Relay::Hs256, "hello world".into(), malformed("expected three dot-separated parts")),
        ("garbage with dots", Relay::Hs256, "..".into(), malformed("empty header or payload")),
        ("empty token", Relay::Hs256, String::new(), malformed("expected three dot-separated parts")),
        ("NUL and newline", Relay::Hs256, format!("{}.\n\0.x", b64(hs_header)), malformed("a part is not base64url")),
        ("tidewire claim not an object", Relay::Hs256, hs256(&claims_with(json!({"tidewire": ["a"]}))), Err(JwtError::Claims("tidewire is not an object".into()))),
        ("read claim not an array", Relay::Hs256, hs256(&claims_with(json!({"read": "a"}))), Err(JwtError::Claims("read is not an array of stream patterns or {\"stream\", \"where\"} objects".into()))),
        ("bad stream pattern", Relay::Hs256, hs256(&claims_with(json!({"write": ["a*b"]}))), Err(JwtError::Claims("write[0]: bad stream pattern: `*` may only end a stream pattern: \"a*b\"".into()))),
        ("bad placeholder", Relay::Hs256, hs256(&claims_with(json!({"read": ["board:{x"]}))), Err(JwtError::Claims("read[0]: bad placeholder in \"board:{x\": expected {name} or {claims.name} with a name of [A-Za-z0-9_.]".into()))),
        ("bad rule object", Relay::Hs256, hs256(&claims_with(json!({"read": [{"stream": "a", "filter": {}}]}))), Err(JwtError::Claims("read is not an array of stream patterns or {\"stream\", \"where\"} objects".into()))),
        ("sub is a number", Relay::Hs256, hs256(&claims_with(json!({"sub": 42}))), Err(JwtError::Claims("sub is not a string".into()))),
    ];
    assert!(rows.len() >= 25, "the table has {} rows", rows.len());
    let mut failures = Vec::new();
    for (name, relay, token, expected) in &rows {
        let outcome = verifier(*relay).verify_at(token, NOW).map(|_| ());
        if &outcome != expected {
            failures.push(format!("{name}: expected {expected:?}, got {outcome:?}"));
        }
        if let Err(error) = &outcome {
            // Messages never echo the token (the 16 KiB one would be obvious).
            assert!(
                token.len() < 8 || !error.to_string().contains(token.as_str()),
                "{name} leaks the token"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("valid stream name")
}

#[test]
fn verified_token_carries_permissions_expiry_and_subject() {
    let verified = verifier(Relay::Hs256)
        .verify_at(&hs256(&claims_with(json!({"write": ["b"]}))), NOW)
        .expect("valid token");
    assert_eq!(verified.expires_at, NOW + 60);
    assert_eq!(verified.subject.as_deref(), Some("user-1"));
    let permissions = &verified.permissions;
    assert!(permissions.can_read(&stream("a")));
    assert!(permissions.can_read(&stream("room:7")));
    assert!(!permissions.can_read(&stream("b")));
    // Top-level `write` is united with `tidewire.write`.
    assert!(permissions.can_write_all(&stream("a")));
    assert!(permissions.can_write_all(&stream("b")));
    assert!(!permissions.can_write_all(&stream("room:7")));
}

#[test]
fn debug_never_prints_the_secret() {
    let text = format!("{:?}", verifier(Relay::Hs256));
    assert!(text.contains("<redacted>"), "{text}");
    assert!(!text.contains("test-only-secret"), "{text}");
}

#[test]
fn options_pick_and_check_the_algorithm() {
    let with = |change: &dyn Fn(&mut Options)| {
        let mut options = Options::default();
        change(&mut options);
        JwtVerifier::from_options(&options)
    };
    let secret = |options: &mut Options| options.jwt_secret = Some("s3cret".into());
    let key_file = |name: &str| {
        std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/keys"
        ))
        .join(name)
    };
    assert!(matches!(with(&|_| {}), Ok(None)));
    let hs = with(&secret).expect("secret").expect("verifier");
    assert_eq!(hs.algorithm(), JwtAlgorithm::Hs256);
    let rsa = with(&|options| options.jwt_public_key = Some(key_file("test-only-rsa-public.pem")));
    assert_eq!(
        rsa.expect("rsa").expect("verifier").algorithm(),
        JwtAlgorithm::Rs256
    );
    let ed = with(&|options| {
        options.jwt_public_key = Some(key_file("test-only-ed25519-public.pem"));
        options.jwt_algorithm = Some("eddsa".into());
    });
    assert_eq!(
        ed.expect("ed").expect("verifier").algorithm(),
        JwtAlgorithm::EdDsa
    );
    let errors = [
        with(&|options| options.jwt_secret = Some(String::new())),
        with(&|options| {
            secret(options);
            options.jwt_algorithm = Some("RS256".into());
        }),
        with(&|options| {
            options.jwt_public_key = Some(key_file("test-only-rsa-public.pem"));
            options.jwt_algorithm = Some("HS256".into());
        }),
        with(&|options| {
            options.jwt_public_key = Some(key_file("test-only-rsa-public.pem"));
            options.jwt_algorithm = Some("EdDSA".into());
        }),
        with(&|options| options.jwt_public_key = Some(key_file("missing.pem"))),
        with(&|options| {
            secret(options);
            options.jwt_algorithm = Some("none".into());
        }),
        with(&|options| options.jwt_audience = Some("tidewire".into())),
        with(&|options| {
            secret(options);
            options.jwt_public_key = Some(key_file("test-only-rsa-public.pem"));
        }),
    ];
    for (index, result) in errors.iter().enumerate() {
        assert!(
            result.is_err(),
            "case {index} should be refused: {result:?}"
        );
    }
}

#[test]
fn signed_helper_round_trips() {
    let token = sign_hs256(SECRET, &claims()).expect("signs");
    assert!(verifier(Relay::Hs256).verify_at(&token, NOW).is_ok());
}

/// On a paused clock, so the "still pending" checks do not depend on the machine's load.
#[tokio::test(start_paused = true)]
async fn until_expired_fires_at_exp() {
    assert_eq!(time_left(None), None);
    assert_eq!(time_left(Some(0)), Some(Duration::ZERO));
    let left = time_left(Some(now_unix() + 100)).expect("finite");
    assert!(
        left > Duration::from_secs(98) && left <= Duration::from_secs(100),
        "{left:?}"
    );
    // Already expired: completes at once.
    let expired = tokio::time::timeout(Duration::from_secs(5), until_expired(Some(now_unix() - 1)));
    assert!(expired.await.is_ok());
    // Far future (not representable as an instant) and never: still pending.
    let short = Duration::from_millis(20);
    assert!(tokio::time::timeout(short, until_expired(Some(u64::MAX)))
        .await
        .is_err());
    assert!(
        tokio::time::timeout(short, until_expired(Some(now_unix() + 3600)))
            .await
            .is_err()
    );
    assert!(tokio::time::timeout(short, until_expired(None))
        .await
        .is_err());
}
