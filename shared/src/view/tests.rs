//! The view property: for any history of upserts, patches and deletes (records moving in and
//! out included), the view built from the judged events equals the filter applied to the full
//! replay, at every position.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{after, judge, Verdict};
use crate::event::Op;
use crate::filter::Filter;

fn filters() -> Vec<Value> {
    vec![
        json!({}),
        json!({"owner": "u1"}),
        json!({"owner": {"in": ["u1", "u2"]}, "prio": {"gt": 1}}),
        json!({"or": [{"owner": "u2"}, {"done": true}]}),
        json!({"not": {"owner": "u1"}}),
        json!({"due": {"null": true}}),
        json!({"prio": {"ge": 1, "lt": 3}}),
        json!({"and": [{"owner": {"ne": "u3"}}, {"not": {"done": true}}]}),
    ]
}

fn field() -> impl Strategy<Value = (String, Value)> {
    prop_oneof![
        prop_oneof![Just("u1"), Just("u2"), Just("u3")]
            .prop_map(|o| ("owner".to_owned(), json!(o))),
        (0..4i64).prop_map(|p| ("prio".to_owned(), json!(p))),
        any::<bool>().prop_map(|d| ("done".to_owned(), json!(d))),
        prop_oneof![Just(Value::Null), Just(json!("2027-01-01"))]
            .prop_map(|d| ("due".to_owned(), d)),
    ]
}

fn object() -> impl Strategy<Value = Value> {
    proptest::collection::vec(field(), 0..4)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()))
}

fn step() -> impl Strategy<Value = (String, Op, Value)> {
    let key = prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned);
    (
        key,
        prop_oneof![Just(Op::Upsert), Just(Op::Patch), Just(Op::Delete)],
        prop_oneof![4 => object(), 1 => Just(json!("not an object"))],
    )
        .prop_map(|(key, op, data)| match op {
            Op::Delete => (key, op, Value::Null),
            Op::Patch if !data.is_object() => (key, op, json!({})),
            _ => (key, op, data),
        })
}

proptest! {
    #[test]
    fn filtered_view_equals_the_filtered_replay(
        filter in 0..filters().len(),
        steps in proptest::collection::vec(step(), 0..40),
    ) {
        let filter = Filter::parse(&filters()[filter]).expect("valid filter");
        let mut full: BTreeMap<String, Value> = BTreeMap::new();
        let mut view: BTreeMap<String, Value> = BTreeMap::new();
        for (position, (key, op, data)) in steps.into_iter().enumerate() {
            let prior = full.get(&key).cloned();
            let (verdict, body) = judge(&filter, op, prior.as_ref(), &data);
            match verdict {
                Verdict::Skip => prop_assert!(!view.contains_key(&key)),
                Verdict::Pass => {
                    let held = view.get(&key).cloned();
                    prop_assert!(held.is_some(), "pass for a key outside the view");
                    if let Some(next) = after(op, held.as_ref(), &data) {
                        view.insert(key.clone(), next);
                    }
                }
                Verdict::MoveIn => {
                    prop_assert!(!view.contains_key(&key));
                    view.insert(key.clone(), body.expect("a move-in carries the record"));
                }
                Verdict::MoveOut => {
                    prop_assert!(view.remove(&key).is_some());
                }
            }
            match after(op, prior.as_ref(), &data) {
                Some(next) => full.insert(key, next),
                None => full.remove(&key),
            };
            let expected: BTreeMap<String, Value> = full
                .iter()
                .filter(|(_, value)| filter.matches(value))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            prop_assert_eq!(&view, &expected, "at position {}", position + 1);
        }
    }
}

#[test]
fn a_patch_that_moves_a_record_in_sends_the_whole_record() {
    let filter = Filter::parse(&json!({"owner": "u1"})).expect("valid");
    let prior = json!({"owner": "u2", "title": "milk"});
    let (verdict, body) = judge(&filter, Op::Patch, Some(&prior), &json!({"owner": "u1"}));
    assert_eq!(verdict, Verdict::MoveIn);
    assert_eq!(body, Some(json!({"owner": "u1", "title": "milk"})));
    let (verdict, _) = judge(
        &filter,
        Op::Patch,
        Some(&json!({"owner": "u1"})),
        &json!({"owner": "u2"}),
    );
    assert_eq!(verdict, Verdict::MoveOut);
    let (verdict, _) = judge(
        &filter,
        Op::Delete,
        Some(&json!({"owner": "u2"})),
        &Value::Null,
    );
    assert_eq!(verdict, Verdict::Skip);
}
