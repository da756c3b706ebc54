//! Placeholders filled from claims, and every way a claim could try to widen a grant.

use serde_json::{json, Map, Value};

use super::*;

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("claims are an object"),
    }
}

#[test]
fn patterns_expand_scalars_and_arrays() {
    let claims = claims(json!({"sub": "u1", "boards": [1, "b-2"], "org": {"id": "acme"}}));
    assert_eq!(
        pattern("user:{sub}", &claims),
        Ok(Ok(vec!["user:u1".into()]))
    );
    assert_eq!(
        pattern("board:{claims.boards}/*", &claims),
        Ok(Ok(vec!["board:1/*".into(), "board:b-2/*".into()]))
    );
    assert_eq!(
        pattern("org:{org.id}", &claims),
        Ok(Ok(vec!["org:acme".into()]))
    );
}

#[test]
fn unsafe_or_missing_claims_grant_nothing() {
    let claims = claims(json!({
        "star": "*", "brace": "a}b", "quote": "a\"b", "slash": "1/x", "colon": "a:b",
        "empty": "", "object": {"a": 1}, "null": null, "mixed": ["ok", "*"]
    }));
    for name in [
        "star", "brace", "quote", "slash", "colon", "empty", "object", "null", "absent",
    ] {
        let result = pattern(&format!("board:{{{name}}}/*"), &claims);
        assert!(matches!(result, Ok(Err(_))), "{name}: {result:?}");
    }
    // An unusable element is left out; the others still grant.
    assert_eq!(pattern("b:{mixed}", &claims), Ok(Ok(vec!["b:ok".into()])));
}

#[test]
fn malformed_templates_are_refused() {
    let claims = claims(json!({"sub": "u1"}));
    for template in ["a{", "a}", "{}", "{a b}", "{claims.}", "{a{b}}"] {
        assert!(pattern(template, &claims).is_err(), "{template}");
    }
}

#[test]
fn filters_take_the_claim_value_never_text_to_reparse() {
    let claims = claims(json!({"sub": "u\"1}*", "teams": ["t1", "t2"], "n": 7}));
    assert_eq!(
        filter(&json!({"owner": "{sub}"}), &claims),
        Ok(Ok(json!({"owner": "u\"1}*"})))
    );
    assert_eq!(
        filter(&json!({"team": "{claims.teams}"}), &claims),
        Ok(Ok(json!({"team": {"in": ["t1", "t2"]}})))
    );
    assert_eq!(
        filter(
            &json!({"team": {"in": ["{teams}", "t9"]}, "n": {"ge": "{n}"}}),
            &claims
        ),
        Ok(Ok(
            json!({"team": {"in": ["t1", "t2", "t9"]}, "n": {"ge": 7}})
        ))
    );
    assert_eq!(
        filter(&json!({"owner": "user-{n}"}), &claims),
        Ok(Ok(json!({"owner": "user-7"})))
    );
    assert!(matches!(
        filter(&json!({"owner": "{missing}"}), &claims),
        Ok(Err(Unfilled::Missing(_)))
    ));
}
