//! The SQL side and the Rust side (`tidewire-shared`) agree: the stream-name rule, and every
//! NOTIFY payload the SQL functions send decodes with the shared codec.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tidewire_shared::notify::{decode, NotifyPayload};
use tidewire_shared::{Op, StreamKind, StreamName};
use tidewire_tests::{Notifications, TestPg};

use crate::support::{publish, WAIT};

/// Names the SQL rule accepts are exactly the durable names `StreamName` accepts, over edge
/// cases and a few thousand random names.
#[tokio::test]
async fn stream_name_rule_matches_the_rust_side() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "create function pg_temp.accepts(name text) returns boolean language plpgsql as $$
             begin
                 perform tidewire.check_stream(name);
                 return true;
             exception when sqlstate '22023' then
                 return false;
             end $$;",
        )
        .await
        .expect("helper");

    let mut names: Vec<String> = [
        "",
        "a",
        "_",
        "9",
        ".a",
        "-a",
        "/a",
        ":a",
        "a.b:c/d-e_f",
        "raw:",
        "raw:x",
        "raw:tw:x",
        "tw:x",
        "RAW:x",
        "raw",
        "a b",
        "a\"b",
        "a'b",
        "a;b",
        "a\nb",
        "a\tb",
        "café",
        "tоdos",
        "a\u{2215}b",
        "x\";drop table t;--",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
    names.push("n".repeat(60));
    names.push("n".repeat(61));
    names.push(format!("raw:{}", "n".repeat(56)));
    // Half the names use only allowed characters, half mix in forbidden ones.
    let allowed: Vec<char> = "abcXYZ019_.:/-rw".chars().collect();
    let mixed: Vec<char> = "abcXYZ019_.:/-rw \"';%*\\\n\u{e9}\u{43e}\u{2215}"
        .chars()
        .collect();
    let mut rng = StdRng::seed_from_u64(0x7469_6465);
    for round in 0..3000 {
        let alphabet = if round % 2 == 0 { &allowed } else { &mixed };
        let len = rng.gen_range(0..=64);
        let mut name: String = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        if rng.gen_bool(0.1) {
            name.insert_str(0, "raw:");
        }
        names.push(name);
    }

    let rows = client
        .query(
            "select name, pg_temp.accepts(name) from unnest($1::text[]) with ordinality as n(name, i) order by i",
            &[&names],
        )
        .await
        .expect("check names");
    assert_eq!(rows.len(), names.len());
    let mut accepted = 0;
    for row in rows {
        let name: String = row.get(0);
        let sql_accepts: bool = row.get(1);
        let rust_accepts =
            StreamName::new(&name).is_ok_and(|valid| valid.kind() == StreamKind::Durable);
        assert_eq!(sql_accepts, rust_accepts, "rules disagree on {name:?}");
        accepted += usize::from(sql_accepts);
    }
    assert!(
        accepted > 100,
        "the random names exercise acceptance too ({accepted})"
    );
}

/// Every payload form `tidewire.publish` and `tidewire.drop_stream` send decodes with
/// `tidewire_shared::notify::decode` to the expected value.
#[tokio::test]
async fn notify_payloads_decode_with_the_shared_codec() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let mut listener = Notifications::listen(&pg.url(), &["tw:wire"]).await;
    let big = json!("b".repeat(9000)).to_string();
    let steps: [(&str, &str, &str); 5] = [
        (
            "k\"1",
            "upsert",
            r#"{"text":"line\nbreak \"quoted\" é","n":[1,2.5,null]}"#,
        ),
        ("k\"1", "patch", r#"{"n":true}"#),
        ("k\"1", "delete", "null"),
        ("cursor", "message", r#"{"x":3}"#),
        ("large", "upsert", &big),
    ];
    for (key, op, data) in steps {
        publish(&client, "wire", key, op, data)
            .await
            .expect("publish");
    }
    client
        .batch_execute("select tidewire.drop_stream('wire')")
        .await
        .expect("drop");

    let mut decoded = Vec::new();
    for _ in 0..6 {
        let notification = listener.recv(WAIT).await.expect("notification");
        decoded.push(decode(notification.payload()).unwrap_or_else(|error| {
            panic!(
                "shared codec rejects {:?}: {error:?}",
                notification.payload()
            )
        }));
    }
    let epoch = match &decoded[0] {
        NotifyPayload::Event(stored) => stored.event.epoch,
        other => panic!("expected an event, got {other:?}"),
    };
    // The pre-image travels with each event: none for the first write of the key, then the
    // record each later event started from.
    let upserted: serde_json::Value = serde_json::from_str(steps[0].2).expect("JSON");
    let mut patched = upserted.clone();
    patched["n"] = serde_json::json!(true);
    let priors = [None, Some(upserted), Some(patched)];
    for (index, (key, op, data)) in steps.iter().take(3).enumerate() {
        match &decoded[index] {
            NotifyPayload::Event(stored) => {
                let event = &stored.event;
                assert_eq!(stored.prior, priors[index], "prior of event {index}");
                assert_eq!(event.stream.as_str(), "wire");
                assert_eq!(event.epoch, epoch);
                assert_eq!(event.seq, index as u64 + 1);
                assert_eq!(event.key, *key);
                assert_eq!(event.op.as_str(), *op);
                assert_eq!(
                    event.data,
                    serde_json::from_str::<serde_json::Value>(data).expect("JSON")
                );
                assert!(event.ts.is_some_and(|ts| ts > 1_600_000_000_000_000));
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }
    assert_eq!(
        match &decoded[2] {
            NotifyPayload::Event(stored) => stored.event.op,
            _ => Op::Upsert,
        },
        Op::Delete
    );
    match &decoded[3] {
        NotifyPayload::Message { key, data, ts, .. } => {
            assert_eq!(key, "cursor");
            assert_eq!(data, &json!({"x": 3}));
            assert!(ts.is_some());
        }
        other => panic!("expected a message, got {other:?}"),
    }
    assert!(
        matches!(&decoded[4], NotifyPayload::Pointer { epoch: e, seq: 4, .. } if *e == epoch),
        "{:?}",
        decoded[4]
    );
    assert!(
        matches!(&decoded[5], NotifyPayload::Dropped { epoch: e, .. } if *e == epoch),
        "{:?}",
        decoded[5]
    );
}
