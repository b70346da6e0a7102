use super::*;
use std::collections::hash_map::DefaultHasher;

fn hash(u: &UserId) -> u64 {
    let mut h = DefaultHasher::new();
    u.hash(&mut h);
    h.finish()
}

#[test]
fn a_user_id_is_small() {
    assert!(std::mem::size_of::<UserId>() <= 24);
    assert_eq!(
        std::mem::size_of::<Option<UserId>>(),
        std::mem::size_of::<UserId>()
    );
}

#[test]
fn the_canonical_decimal_of_a_u32_is_that_number() {
    for (text, n) in [("0", 0), ("42", 42), ("4294967295", u32::MAX)] {
        let u = UserId::parse(text).unwrap();
        assert_eq!(u, UserId::from(n));
        assert_eq!(u.as_num(), Some(n));
        assert_eq!(hash(&u), hash(&UserId::from(n)));
        assert_eq!(u.to_string(), text);
    }
    // Not canonical: strings, not numbers.
    for text in ["042", "+42", "-1", "4294967296", " 42", "42.0", "00"] {
        let u = UserId::parse(text).unwrap();
        assert_eq!(u.as_num(), None, "{text}");
        assert_eq!(u.as_str(), Some(text));
    }
    assert_ne!(UserId::parse("042").unwrap(), UserId::from(42));
}

#[test]
fn strings_are_1_to_128_bytes_without_control_characters() {
    assert_eq!(UserId::parse(""), Err(UserIdError::Empty));
    let max = "é".repeat(64);
    assert_eq!(max.len(), 128);
    assert_eq!(UserId::parse(&max).unwrap().as_str(), Some(max.as_str()));
    let over = format!("{max}x");
    assert_eq!(UserId::parse(&over), Err(UserIdError::TooLong(129)));
    for bad in ["a\0b", "tab\t", "line\n", "del\u{7f}", "c1\u{85}"] {
        assert_eq!(
            UserId::parse(bad),
            Err(UserIdError::ControlCharacter),
            "{bad:?}"
        );
    }
    assert_eq!(
        UserId::from_bytes(b"\xff\xfe"),
        Err(UserIdError::NotStringOrInteger)
    );
    // Every refusal says what is wrong.
    assert!(UserIdError::TooLong(129).to_string().contains("129"));
    assert!(UserIdError::Empty.to_string().contains("empty"));
}

#[test]
fn short_strings_are_inline_and_long_ones_shared() {
    let short = UserId::parse(&"a".repeat(INLINE_MAX)).unwrap();
    assert!(!short.is_heap());
    assert_eq!(short.heap_bytes(), 0);
    let long = UserId::parse(&"a".repeat(INLINE_MAX + 1)).unwrap();
    assert!(long.is_heap());
    let uuid = UserId::parse("6f1c1d2e-8d3b-4b0c-9a59-2b8f7d1e0a44").unwrap();
    assert!(uuid.is_heap());
    // A clone shares the string.
    let copy = uuid.clone();
    match (&uuid.0, &copy.0) {
        (Repr::Heap(a), Repr::Heap(b)) => assert!(Arc::ptr_eq(a, b)),
        _ => panic!("heap ids"),
    }
    // Inline and heap ids of equal text cannot exist side by side: the length decides.
    assert_eq!(hash(&short), hash(&short.clone()));
    assert_eq!(long, UserId::parse(&"a".repeat(INLINE_MAX + 1)).unwrap());
    assert_eq!(
        hash(&long),
        hash(&UserId::parse(&"a".repeat(INLINE_MAX + 1)).unwrap())
    );
    assert_ne!(short, long);
}

#[test]
fn json_in_and_out() {
    let j = |s: &str| serde_json::from_str::<UserId>(s);
    assert_eq!(j("42").unwrap(), UserId::from(42));
    assert_eq!(j("\"42\"").unwrap(), UserId::from(42));
    assert_eq!(j("\"alice\"").unwrap().as_str(), Some("alice"));
    assert_eq!(j("4294967295").unwrap(), UserId::from(u32::MAX));
    for bad in [
        "4294967296",
        "-1",
        "1.5",
        "{}",
        "[]",
        "true",
        "null",
        "\"\"",
        "\"a\\u0000\"",
    ] {
        let e = j(bad).unwrap_err().to_string();
        assert!(e.contains("user id"), "{bad}: {e}");
    }
    let long = format!("\"{}\"", "x".repeat(129));
    assert!(j(&long).unwrap_err().to_string().contains("129 bytes"));
    assert_eq!(serde_json::to_string(&UserId::from(7)).unwrap(), "7");
    assert_eq!(
        serde_json::to_string(&UserId::parse("bob").unwrap()).unwrap(),
        "\"bob\""
    );
    let v = serde_json::json!("carol");
    assert_eq!(UserId::from_json(&v).unwrap().as_str(), Some("carol"));
    assert_eq!(
        UserId::from_json(&serde_json::json!(-3)),
        Err(UserIdError::NotStringOrInteger)
    );
}

#[test]
fn wire_form_round_trips() {
    for u in [
        UserId::from(9),
        UserId::parse("alice").unwrap(),
        UserId::parse(&"z".repeat(128)).unwrap(),
    ] {
        let mut out = Vec::new();
        u.encode(&mut out);
        assert_eq!(out.len(), u.encoded_len());
        let back = match out[0] {
            0 => UserId::from(u32::from_be_bytes(out[1..5].try_into().unwrap())),
            _ => UserId::from_bytes(&out[2..]).unwrap(),
        };
        assert_eq!(back, u);
    }
}

#[test]
fn order_puts_numbers_first() {
    let mut v = [
        UserId::parse("b").unwrap(),
        UserId::from(10),
        UserId::parse("a").unwrap(),
        UserId::from(2),
    ];
    v.sort();
    let texts: Vec<String> = v.iter().map(|u| u.to_string()).collect();
    assert_eq!(texts, ["2", "10", "a", "b"]);
}
