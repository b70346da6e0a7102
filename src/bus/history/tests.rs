use super::*;

fn link(offset: u64, prev: u64) -> Link {
    Link {
        offset,
        prev: Some(prev),
    }
}

#[test]
fn the_chain_proves_continuity_from_the_position() {
    let held = [link(10, 7), link(12, 10), link(15, 12)];
    assert!(
        is_complete(7, &held, false, None, 1),
        "had 7, prev of 10 is 7"
    );
    assert!(
        is_complete(9, &held, false, None, 1),
        "nothing of the user in 8..=9"
    );
    assert!(!is_complete(6, &held, false, None, 1), "7 was dropped");
    assert!(!is_complete(7, &held, true, None, 1), "more than the limit");
    let gap = [link(10, 7), link(15, 12)];
    assert!(!is_complete(7, &gap, false, None, 1), "12 removed by hand");
    let foreign = [Link {
        offset: 10,
        prev: None,
    }];
    assert!(
        !is_complete(9, &foreign, false, None, 1),
        "no header: no proof"
    );
}

#[test]
fn a_chain_start_is_complete_only_below_the_first_sequence() {
    // Message 40 arrived when the user held nothing: every earlier one went by age, so
    // below the stream's first sequence.
    let held = [link(40, 0)];
    assert!(
        is_complete(39, &held, false, None, 100),
        "nothing in between"
    );
    assert!(is_complete(30, &held, false, None, 31), "all below 31 gone");
    assert!(
        !is_complete(30, &held, false, None, 35),
        "31..=34 may have been ours"
    );
    assert!(
        is_complete(0, &held, false, None, 1),
        "nothing ever dropped"
    );
}

#[test]
fn with_nothing_held_after_the_position() {
    assert!(
        is_complete(20, &[], false, Some(20), 500),
        "had the last one"
    );
    assert!(
        is_complete(25, &[], false, Some(20), 500),
        "a newer position"
    );
    assert!(
        !is_complete(19, &[], false, Some(20), 500),
        "never reached here"
    );
    assert!(
        is_complete(20, &[], false, None, 21),
        "nothing dropped after 20"
    );
    assert!(is_complete(20, &[], false, None, 3), "first held is older");
    assert!(
        !is_complete(20, &[], false, None, 22),
        "21 may have been ours"
    );
    assert!(is_complete(u64::MAX, &[], false, None, u64::MAX));
}

#[test]
fn user_subjects_are_single_safe_tokens() {
    assert_eq!(
        user_subject("ringwire.history", 1, b"42"),
        "ringwire.history.1.uNDI"
    );
    assert_eq!(user_subject("p", 7, b""), "p.7.u");
    let s = user_subject("p", 0, b"a.b*>c d/\xff\x00");
    let token = s.rsplit('.').next().unwrap_or_default();
    assert_eq!(s.matches('.').count(), 2);
    assert!(token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
}

#[test]
fn settings_are_checked() {
    assert_eq!(NatsSettings::default().validate(), Ok(()));
    let bad = [
        NatsSettings {
            stream: "a.b".into(),
            ..Default::default()
        },
        NatsSettings {
            subject_prefix: "a..b".into(),
            ..Default::default()
        },
        NatsSettings {
            subject_prefix: "a.*".into(),
            ..Default::default()
        },
        NatsSettings {
            size: 0,
            ..Default::default()
        },
        NatsSettings {
            ttl: Duration::from_millis(10),
            ..Default::default()
        },
        NatsSettings {
            replicas: 0,
            ..Default::default()
        },
    ];
    for s in bad {
        let e = s.validate().expect_err("refused");
        assert!(e.to_string().starts_with("history store nats: bad setting"));
    }
}

#[test]
fn refusals_name_the_real_last_sequence() {
    let e = "wrong last sequence: wrong last sequence: 42 (code 400, error code 10071)";
    assert_eq!(named_last_sequence(e), Some(42));
    assert_eq!(named_last_sequence("wrong last sequence"), None);
}

#[test]
fn a_lost_append_backs_off_after_its_first_retry() {
    assert_eq!(contended_backoff(1), Duration::ZERO);
    for attempts in 2..20 {
        let cap = u64::from((attempts - 1).min(8));
        assert!(contended_backoff(attempts) <= Duration::from_millis(cap));
    }
}

#[test]
fn reconnect_delays_are_short_and_capped() {
    assert_eq!(reconnect_delay(1), Duration::ZERO);
    assert_eq!(reconnect_delay(2), Duration::from_millis(10));
    assert_eq!(reconnect_delay(3), Duration::from_millis(20));
    assert_eq!(reconnect_delay(1_000), Duration::from_secs(1));
}
