//! The filter language's bounds and refusals; its semantics are in `shared/vectors/filters.json`.

use serde_json::json;

use super::*;

fn refused(value: serde_json::Value) -> FilterError {
    Filter::parse(&value).expect_err("refused")
}

#[test]
fn refusals_name_the_place() {
    assert_eq!(refused(json!({"prio": {"gte": 2}})).path, "where.prio.gte");
    assert_eq!(
        refused(json!({"or": [{}, {"a": null}]})).path,
        "where.or[1].a"
    );
    assert_eq!(refused(json!([1])).path, "where");
    assert_eq!(refused(json!({"a": [1]})).path, "where.a");
    assert_eq!(refused(json!({"a": {}})).path, "where.a");
    assert_eq!(refused(json!({"a": {"in": [1, {}]}})).path, "where.a.in[1]");
    assert_eq!(refused(json!({"": 1})).path, "where.");
    assert!(Filter::parse_str("{").is_err());
    assert!(Filter::parse_str(&format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_FILTER_BYTES))).is_err());
}

#[test]
fn depth_and_size_are_bounded() {
    let mut deep = json!({"a": 1});
    for _ in 0..MAX_FILTER_DEPTH {
        deep = json!({ "not": deep });
    }
    assert!(refused(deep).reason.contains("deeper"));
    let wide: Vec<i64> = (0..=MAX_FILTER_TERMS as i64).collect();
    assert!(refused(json!({"a": {"in": wide}})).reason.contains("terms"));
}

#[test]
fn and_never_widens() {
    let grant = Filter::parse(&json!({"owner": "u1"})).expect("valid");
    let asked =
        Filter::parse(&json!({"or": [{"owner": "u2"}, {"not": {"owner": "u1"}}]})).expect("valid");
    let both = asked.and(grant);
    assert!(!both.matches(&json!({"owner": "u2"})));
    assert!(!both.matches(&json!({"owner": "u3"})));
    assert!(!both.matches(&json!({"owner": "u1"})));
}

#[test]
fn index_terms_are_required_equalities() {
    let filter = Filter::parse(&json!({"owner": "u1", "prio": {"gt": 1}})).expect("valid");
    let (field, values) = filter.index_terms().expect("indexed");
    assert_eq!(
        (&**field, values),
        ("owner", &[Scalar::Str("u1".into())][..])
    );
    let filter = Filter::parse(&json!({"or": [{"owner": "u1"}]})).expect("valid");
    assert!(filter.index_terms().is_none());
    assert_eq!(
        Scalar::Num(1.0),
        Scalar::from_json(&json!(1)).expect("scalar")
    );
}

#[test]
fn text_records_are_judged_as_trees() {
    let filters = [
        json!({"owner": "u1"}),
        json!({"owner": {"ne": "u1"}}),
        json!({"due": {"null": true}}),
        json!({"or": [{"prio": {"ge": 2}}, {"not": {"tags": {"in": ["a", "b"]}}}]}),
    ];
    let records = [
        r#"1"#,
        r#""owner""#,
        r#"null"#,
        r#"[{"owner": "u1"}]"#,
        r#"{}"#,
        r#"{"owner": "u1", "big": {"deep": [1, 2, {"owner": "u2"}]}, "prio": 3}"#,
        r#"{"owner": "u1", "owner": "u2"}"#,
        r#"{"ow\u006eer": "u1", "due": null, "tags": "a"}"#,
        r#"{"prio": 1.5, "tags": "c", "due": "2027-01-01"}"#,
    ];
    for filter in &filters {
        let filter = Filter::parse(filter).expect("valid");
        for text in records {
            let tree: serde_json::Value = serde_json::from_str(text).expect("valid");
            let json = crate::Json::parse(text).expect("valid");
            assert_eq!(
                filter.matches_json(&json),
                filter.matches(&tree),
                "{filter:?} on {text}"
            );
        }
    }
}
