//! Tests of the pure verification (HS256, ES256 with a key pair made here, RS256 with the
//! test-only pair in tests/fixtures/jwt) and of where a request carries its token.
use super::*;
use crate::config::Config;
use crate::protocol::handshake::HandshakeLimits;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const NOW: u64 = 1_700_000_000;

fn config(toml: &str) -> JwtConfig {
    let c: JwtConfig = toml::from_str(toml).unwrap();
    c.validate().unwrap();
    c
}

fn hs_verifier(extra: &str) -> JwtVerifier {
    JwtVerifier::new(&config(&format!("secret = \"{HEX}\"\n{extra}"))).unwrap()
}

fn hs(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&hex_secret()),
        claims,
    )
}

fn hex_secret() -> Vec<u8> {
    config(&format!("secret = \"{HEX}\""))
        .secret_bytes()
        .unwrap()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn claims() -> Value {
    json!({ "sub": "42", "ctx": 7, "exp": NOW + 60 })
}

#[test]
fn hs256_good_token_gives_context_user_and_expiry() {
    let v = hs_verifier("");
    let token = hs(claims());
    let a = v.verify(&token, NOW, None).unwrap();
    assert_eq!((a.context, a.user), (7, 42.into()));
    assert_eq!(a.expires_at, NOW + 60 + 30, "exp plus the default leeway");
    assert_eq!(a.session, SessionId::of_token(token.as_bytes()));
    assert_eq!(a.session.0[0], 0, "never a session's version byte");
    // A number works as well as a decimal string, for both ids.
    let t = hs(json!({ "sub": 4_294_967_295u64, "ctx": "9", "exp": NOW + 1 }));
    let a = v.verify(&t, NOW, None).unwrap();
    assert_eq!((a.context, a.user), (9, u32::MAX.into()));
    assert_eq!(
        hex_secret()[..2],
        [0x00, 0x11],
        "the hex is decoded, not used as text"
    );
}

#[test]
fn expiry_and_not_before_with_leeway() {
    let v = hs_verifier("leeway_secs = 10");
    let t = hs(json!({ "sub": 1, "ctx": 1, "exp": NOW }));
    assert_eq!(v.verify(&t, NOW + 9, None).unwrap().expires_at, NOW + 10);
    assert_eq!(v.verify(&t, NOW + 10, None), Err(JwtError::Expired));
    let strict = hs_verifier("leeway_secs = 0");
    assert_eq!(strict.verify(&t, NOW, None), Err(JwtError::Expired));
    assert!(strict.verify(&t, NOW - 1, None).is_ok());
    let t = hs(json!({ "sub": 1, "ctx": 1, "exp": NOW + 100, "nbf": NOW + 20 }));
    assert_eq!(v.verify(&t, NOW, None), Err(JwtError::NotYetValid));
    assert!(
        v.verify(&t, NOW + 10, None).is_ok(),
        "nbf within the leeway"
    );
    let t = hs(json!({ "sub": 1, "ctx": 1 }));
    assert_eq!(v.verify(&t, NOW, None), Err(JwtError::MissingExp));
    let t = hs(json!({ "sub": 1, "ctx": 1, "exp": "soon" }));
    assert_eq!(v.verify(&t, NOW, None), Err(JwtError::Malformed));
    let t = hs(json!({ "sub": 1, "ctx": 1, "exp": (NOW + 5) as f64 + 0.5 }));
    assert_eq!(v.verify(&t, NOW, None).unwrap().expires_at, NOW + 15);
}

#[test]
fn bad_signatures_and_algorithms_are_refused() {
    let v = hs_verifier("");
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&[7u8; 32]),
        claims(),
    );
    assert_eq!(v.verify(&other, NOW, None), Err(JwtError::BadSignature));
    // A payload changed after signing (the user raised to 43).
    let good = hs(claims());
    let forged_payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        json!({ "sub": "43", "ctx": 7, "exp": NOW + 60 }).to_string(),
    );
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_eq!(v.verify(&forged, NOW, None), Err(JwtError::BadSignature));
    let hs384 = sign(
        Algorithm::HS384,
        &EncodingKey::from_secret(&hex_secret()),
        claims(),
    );
    assert_eq!(v.verify(&hs384, NOW, None), Err(JwtError::Algorithm));
    // `alg: none` with no signature.
    let b64 = |v: Value| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            v.to_string(),
        )
    };
    let none = format!("{}.{}.", b64(json!({"alg": "none"})), b64(claims()));
    assert!(v.verify(&none, NOW, None).is_err());
    for junk in ["", "abc", "a.b.c", "..", "x.y"] {
        assert_eq!(
            v.verify(junk, NOW, None),
            Err(JwtError::Malformed),
            "{junk:?}"
        );
    }
}

#[test]
fn issuer_and_audience() {
    let v = hs_verifier("issuer = \"https://idp\"\naudience = \"ringwire\"");
    let with = |iss: Option<&str>, aud: Option<Value>| {
        let mut c = claims();
        if let Some(i) = iss {
            c["iss"] = json!(i);
        }
        if let Some(a) = aud {
            c["aud"] = a;
        }
        v.verify(&hs(c), NOW, None)
    };
    assert!(with(Some("https://idp"), Some(json!("ringwire"))).is_ok());
    assert!(with(Some("https://idp"), Some(json!(["other", "ringwire"]))).is_ok());
    assert_eq!(
        with(Some("https://evil"), Some(json!("ringwire"))),
        Err(JwtError::Issuer)
    );
    assert_eq!(with(None, Some(json!("ringwire"))), Err(JwtError::Issuer));
    assert_eq!(
        with(Some("https://idp"), Some(json!("other"))),
        Err(JwtError::Audience)
    );
    assert_eq!(with(Some("https://idp"), None), Err(JwtError::Audience));
    // No audience configured: a token meant for someone else is refused.
    let plain = hs_verifier("");
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_eq!(plain.verify(&hs(c), NOW, None), Err(JwtError::Audience));
}

#[test]
fn user_and_context_claims() {
    let v = hs_verifier("");
    let with = |c: Value| v.verify(&hs(c), NOW, None);
    // A string user is a user: "alice", a UUID; "42" is the user 42.
    for (sub, user) in [
        (json!("alice"), UserId::parse("alice").unwrap()),
        (json!("42"), 42.into()),
        (json!("0042"), UserId::parse("0042").unwrap()),
    ] {
        let a = with(json!({ "sub": sub, "ctx": 1, "exp": NOW + 9 })).unwrap();
        assert_eq!(a.user, user);
    }
    for bad in [
        json!("x".repeat(129)),
        json!("a\nb"),
        json!(-1),
        json!(4_294_967_296u64),
        json!(1.5),
        json!(""),
    ] {
        assert_eq!(
            with(json!({ "sub": bad, "ctx": 1, "exp": NOW + 9 })),
            Err(JwtError::BadUser),
            "{bad}"
        );
    }
    assert_eq!(
        with(json!({ "ctx": 1, "exp": NOW + 9 })),
        Err(JwtError::MissingUser)
    );
    assert_eq!(
        with(json!({ "sub": 1, "exp": NOW + 9 })),
        Err(JwtError::MissingContext)
    );
    assert_eq!(
        with(json!({ "sub": 1, "ctx": "x", "exp": NOW + 9 })),
        Err(JwtError::BadContext)
    );
    let named = hs_verifier("user_claim = \"uid\"\ncontext_claim = \"tenant\"\ncontext = 5");
    let a = named
        .verify(
            &hs(json!({ "uid": 8, "sub": "x", "exp": NOW + 9 })),
            NOW,
            None,
        )
        .unwrap();
    assert_eq!(
        (a.context, a.user),
        (5, 8.into()),
        "fixed context when the claim is absent"
    );
    let a = named
        .verify(
            &hs(json!({ "uid": 8, "tenant": 6, "exp": NOW + 9 })),
            NOW,
            None,
        )
        .unwrap();
    assert_eq!(a.context, 6, "the claim wins over the fixed context");
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringwire-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn es256_pair() -> (EncodingKey, String) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    (
        EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        kp.public_key_pem(),
    )
}

#[test]
fn es256_with_a_public_key_file() {
    let (key, public) = es256_pair();
    let path = temp_file("es256.pem", &public);
    let cfg = config(&format!(
        "algorithms = [\"ES256\"]\npublic_key_file = {:?}",
        path.display().to_string()
    ));
    let v = JwtVerifier::new(&cfg).unwrap();
    let a = v
        .verify(&sign(Algorithm::ES256, &key, claims()), NOW, None)
        .unwrap();
    assert_eq!((a.context, a.user), (7, 42.into()));
    let (other, _) = es256_pair();
    let t = sign(Algorithm::ES256, &other, claims());
    assert_eq!(v.verify(&t, NOW, None), Err(JwtError::BadSignature));
    // Algorithm confusion: an HS256 token keyed with the public key's text is not accepted.
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(public.as_bytes()),
        claims(),
    );
    assert_eq!(v.verify(&t, NOW, None), Err(JwtError::Algorithm));
    // An EC key cannot serve RS256.
    let cfg = config(&format!(
        "algorithms = [\"RS256\"]\npublic_key_file = {:?}",
        path.display().to_string()
    ));
    let e = JwtVerifier::new(&cfg).err().unwrap();
    assert!(e.contains("holds no RSA public key"), "{e}");
    let missing = config("algorithms = [\"ES256\"]\npublic_key_file = \"/nonexistent.pem\"");
    assert!(JwtVerifier::new(&missing).is_err());
}

#[test]
fn rs256_with_the_fixture_pair() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");
    let private = std::fs::read(format!("{dir}rs256-test-private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    let cfg = config(&format!(
        "algorithms = [\"RS256\", \"HS256\"]\nsecret = \"{HEX}\"\npublic_key_file = \"{dir}rs256-test-public.pem\""
    ));
    let v = JwtVerifier::new(&cfg).unwrap();
    let r = v.verify(&sign(Algorithm::RS256, &key, claims()), NOW, None);
    assert!(r.is_ok(), "{r:?}");
    assert!(
        v.verify(&hs(claims()), NOW, None).is_ok(),
        "both algorithms"
    );
    let t = sign(
        Algorithm::RS256,
        &key,
        json!({ "sub": 1, "ctx": 1, "exp": NOW - 100 }),
    );
    assert_eq!(v.verify(&t, NOW, None), Err(JwtError::Expired));
    // ES256 is not listed: refused before any key is looked at.
    let (ec, _) = es256_pair();
    let t = sign(Algorithm::ES256, &ec, claims());
    assert_eq!(v.verify(&t, NOW, None), Err(JwtError::Algorithm));
}

#[test]
fn rs256_with_a_fetched_key_set_chosen_by_kid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");
    let private = std::fs::read(format!("{dir}rs256-test-private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    let set = std::fs::read(format!("{dir}rs256-test-jwks.json")).unwrap();
    let set = crate::service::jwks::JwkKeys::parse(&set, &[JwtAlgorithm::RS256]).unwrap();
    let cfg = config("algorithms = [\"RS256\"]\njwks_url = \"https://idp.example/jwks\"");
    let v = JwtVerifier::new(&cfg).unwrap();
    let with_kid = |kid: Option<&str>| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = kid.map(Into::into);
        jsonwebtoken::encode(&h, &claims(), &key).unwrap()
    };
    let a = v
        .verify(&with_kid(Some("rs256-test")), NOW, Some(&set))
        .unwrap();
    assert_eq!((a.context, a.user), (7, 42.into()));
    assert!(
        v.verify(&with_kid(None), NOW, Some(&set)).is_ok(),
        "the set's only RS256 key"
    );
    assert_eq!(
        v.verify(&with_kid(Some("rotated")), NOW, Some(&set)),
        Err(JwtError::UnknownKey)
    );
    assert_eq!(
        v.verify(&with_kid(Some("rs256-test")), NOW, None),
        Err(JwtError::UnknownKey),
        "no set fetched yet"
    );
    // A token signed by another key under the set's kid.
    let (ec, _) = es256_pair();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("rs256-test".into());
    let t = jsonwebtoken::encode(&h, &claims(), &ec).unwrap();
    assert_eq!(v.verify(&t, NOW, Some(&set)), Err(JwtError::Algorithm));
}

fn request(target: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

#[test]
fn where_a_request_carries_its_token() {
    let limits = HandshakeLimits::default();
    let find = |target: &str, extra: &str| {
        let buf = request(target, extra);
        let req = handshake::parse_request(&buf, &limits).unwrap().unwrap();
        find_token(&req, "token").map(|f| (f.token.to_string(), f.in_query))
    };
    assert_eq!(
        find("/ws?a=1&token=t.q.x", ""),
        Some(("t.q.x".into(), true))
    );
    assert_eq!(
        find("/ws?token=q", "Authorization: Bearer h.e.d\r\n"),
        Some(("h.e.d".into(), false)),
        "the header first"
    );
    assert_eq!(
        find("/ws", "Sec-WebSocket-Protocol: ringwire.jwt, p.r.t\r\n"),
        Some(("p.r.t".into(), false))
    );
    assert_eq!(
        find("/ws", "Sec-WebSocket-Protocol: p.r.t,ringwire.jwt\r\n"),
        Some(("p.r.t".into(), false))
    );
    assert_eq!(
        find("/ws", "Sec-WebSocket-Protocol: p.r.t\r\n"),
        None,
        "no marker"
    );
    assert_eq!(find("/ws?token=", ""), None);
    assert_eq!(find("/ws", "Authorization: Basic abc\r\n"), None);
    assert_eq!(
        find("/ws", "Authorization: bearer  b.e.r\r\n"),
        Some(("b.e.r".into(), false))
    );
    assert_eq!(find("/ws", "Authorization: Bearer \r\n"), None);
    assert!(offers_protocol(Some("chat, ringwire.jwt")));
    assert!(!offers_protocol(Some("ringwire.jwtx")) && !offers_protocol(None));
    assert_eq!(strip_param("a=1&token=x&b=2", "token"), "a=1&b=2");
    assert_eq!(strip_param("token=x", "token"), "");
    assert_eq!(strip_param("tokens=1&token", "token"), "tokens=1");
}

mod upgrade {
    use super::*;
    use crate::service::refusal::Refusal;
    use crate::service::session::SessionKey;
    use crate::service::upgrade::{Decision, SessionCheck, UpgradePolicy};
    use std::collections::HashMap;

    fn policy() -> UpgradePolicy {
        let toml = format!(
            "[jwt]\nsecret = \"{HEX}\"\n[websockets]\ncontexts = {{ \"9\" = false }}\n\
             [[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\nauth = \"jwt\"\n\
             [[endpoints]]\npath = \"/socket.io/\"\nkind = \"socketio\"\nauth = \"jwt\"\n"
        );
        UpgradePolicy::new(Config::from_toml(&toml).unwrap()).unwrap()
    }

    fn decide(p: &UpgradePolicy, buf: &[u8]) -> Decision {
        let key = SessionKey::random();
        let revoked = HashMap::new();
        p.decide(
            buf,
            &SessionCheck {
                key: &key,
                now: NOW,
                revoked: &revoked,
                jwks: None,
            },
        )
    }

    #[test]
    fn raw_upgrades_with_a_token() {
        let p = policy();
        let t = hs(claims());
        match decide(&p, &request(&format!("/ws?x=1&token={t}"), "")) {
            Decision::Upgrade(plan) => {
                let a = plan.auth.unwrap();
                assert_eq!((a.context, a.user, a.expires_at), (7, 42.into(), NOW + 90));
                assert_eq!(&*plan.query, "x=1", "the token is not kept");
                assert_eq!(plan.protocol, None);
            }
            _ => panic!("expected an upgrade"),
        }
        let proto = format!("Sec-WebSocket-Protocol: ringwire.jwt, {t}\r\n");
        match decide(&p, &request("/ws?x=1", &proto)) {
            Decision::Upgrade(plan) => {
                assert_eq!(plan.auth.unwrap().user, 42.into());
                assert_eq!(plan.protocol, Some(JWT_PROTOCOL));
                assert_eq!(&*plan.query, "x=1");
            }
            _ => panic!("expected an upgrade"),
        }
        let refused = |target: &str, extra: &str| match decide(&p, &request(target, extra)) {
            Decision::Refuse(r) => Some((r.status(), r)),
            _ => None,
        };
        assert_eq!(
            refused("/ws", ""),
            Some((401, Refusal::Jwt(JwtError::Missing)))
        );
        assert_eq!(
            refused("/ws?token=a.b.c", ""),
            Some((401, Refusal::Jwt(JwtError::Malformed)))
        );
        let ctx9 = hs(json!({ "sub": 1, "ctx": 9, "exp": NOW + 9 }));
        assert_eq!(
            refused(&format!("/ws?token={ctx9}"), ""),
            Some((403, Refusal::Disabled)),
            "the cascade applies to token users too"
        );
        let r = Refusal::Jwt(JwtError::BadUser);
        assert!(crate::service::refusal::LABELS[r.index()] == "jwt_bad_user");
    }

    #[test]
    fn socketio_polling_and_websocket_take_the_token() {
        let p = policy();
        let t = hs(claims());
        let poll = format!(
            "GET /socket.io/?EIO=4&transport=polling&token={t} HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        match decide(&p, poll.as_bytes()) {
            Decision::Poll(plan) => {
                assert_eq!((plan.auth.context, plan.auth.user), (7, 42.into()));
                assert_eq!(&*plan.query, "EIO=4&transport=polling");
            }
            _ => panic!("expected a polling request"),
        }
        match decide(
            &p,
            &request(
                &format!("/socket.io/?EIO=4&transport=websocket&token={t}"),
                "",
            ),
        ) {
            Decision::Upgrade(plan) => assert_eq!(plan.auth.unwrap().user, 42.into()),
            _ => panic!("expected an upgrade"),
        }
    }

    #[test]
    fn polling_requests_of_an_expired_token() {
        // As with a session: a request with a sid goes to the owner core (which may hold the
        // session's last packets), marked; without a sid, or with a bad token, it is refused.
        let p = policy();
        let expired = hs(json!({ "sub": 42, "ctx": 7, "exp": NOW - 100 }));
        let get = |q: &str, t: &str| {
            format!(
                "GET /socket.io/?EIO=4&transport=polling{q}&token={t} HTTP/1.1\r\nHost: h\r\n\r\n"
            )
        };
        match decide(&p, get("&sid=abc", &expired).as_bytes()) {
            Decision::Poll(plan) => {
                assert_eq!(plan.ended, Some(Refusal::Jwt(JwtError::Expired)));
                assert_eq!(plan.auth.session, SessionId::of_token(expired.as_bytes()));
            }
            _ => panic!("expected a polling request of an ended token"),
        }
        assert!(matches!(
            decide(&p, get("", &expired).as_bytes()),
            Decision::Refuse(Refusal::Jwt(JwtError::Expired))
        ));
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&[9u8; 32]),
            json!({ "sub": 42, "ctx": 7, "exp": NOW - 100 }),
        );
        assert!(matches!(
            decide(&p, get("&sid=abc", &forged).as_bytes()),
            Decision::Refuse(Refusal::Jwt(JwtError::BadSignature))
        ));
        let v = p.jwt.as_ref().unwrap();
        assert!(v.verify_ended(&expired, None).is_ok());
        assert_eq!(v.verify_ended(&forged, None), Err(JwtError::BadSignature));
    }

    #[test]
    fn a_jwt_endpoint_needs_the_section() {
        let e =
            Config::from_toml("[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\nauth = \"jwt\"\n")
                .err()
                .unwrap();
        assert!(e.to_string().contains("needs a [jwt] section"), "{e}");
    }
}
