//! The index offers a delivery to exactly the filtered subscribers that may care.

use std::num::NonZeroUsize;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use tidewire_shared::{Filter, Op};

use super::Fanout;
use crate::bus::registry::Registry;
use crate::bus::BusConfig;
use crate::delivery::{Change, Delivery};

fn change(op: Op, prior: Option<Value>, data: Value) -> Delivery {
    Delivery::event("s".into(), 1, 1, Bytes::new()).with_change(Change {
        key: "k".into(),
        op,
        data,
        prior,
        ts: None,
    })
}

#[test]
fn candidates_are_the_filters_indexed_under_the_values_before_and_after() {
    let registry = Registry::new(
        BusConfig::default().with_queue_capacity(NonZeroUsize::new(4).expect("not zero")),
    );
    let receivers: Vec<_> = (0..5).map(|_| registry.register()).collect();
    let filters: Vec<Option<Arc<Filter>>> = [
        Some(json!({"owner": "u1"})),
        Some(json!({"owner": {"in": ["u2", "u1"]}, "prio": {"gt": 1}})),
        Some(json!({"owner": "u3"})),
        Some(json!({"or": [{"owner": "u9"}]})),
        None,
    ]
    .into_iter()
    .map(|filter| filter.map(|value| Arc::new(Filter::parse(&value).expect("valid"))))
    .collect();
    let subscribers: Vec<_> = receivers
        .iter()
        .map(|receiver| registry.subscriber(receiver.id()).expect("registered"))
        .collect();
    let all = Fanout::build(
        1,
        subscribers.iter().zip(filters.iter().map(Option::as_ref)),
    );
    let fanout = &all.groups()[0];
    assert_eq!(
        (fanout.len(), fanout.plain().len(), fanout.filtered().len()),
        (5, 1, 4)
    );

    let ids = |delivery: &Delivery| {
        let mut out = Vec::new();
        fanout.candidates(delivery, &mut out);
        out.iter()
            .map(|subscriber| subscriber.id())
            .collect::<Vec<_>>()
    };
    let id = |index: usize| receivers[index].id();
    // u1 -> u3: the u1 filters (move-out) and the u3 one (move-in), plus the scanned one.
    let moved = change(
        Op::Upsert,
        Some(json!({"owner": "u1"})),
        json!({"owner": "u3"}),
    );
    assert_eq!(ids(&moved), vec![id(0), id(1), id(2), id(3)]);
    // A patch that leaves owner alone is judged on the owner before.
    let patch = change(Op::Patch, Some(json!({"owner": "u2"})), json!({"prio": 5}));
    assert_eq!(ids(&patch), vec![id(1), id(3)]);
    // Nobody indexed under u7: only the scanned filter.
    let other = change(Op::Delete, Some(json!({"owner": "u7"})), Value::Null);
    assert_eq!(ids(&other), vec![id(3)]);
    // An advisory has no change: every filtered subscriber.
    let advisory = Delivery::advisory("s".into(), 1, 0, Bytes::new());
    assert_eq!(ids(&advisory).len(), 4);
}
