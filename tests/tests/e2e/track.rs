//! `tidewire.track_table` / `untrack_table`: row changes of an ordinary table become events and
//! records; hostile identifiers cannot inject SQL.

use serde_json::json;
use tidewire_tests::{sqlstate, Notifications, TestPg};

use crate::support::{event, events, records, QUIET, WAIT};

/// INSERT, UPDATE, an UPDATE that changes the key, DELETE, TRUNCATE and a rolled-back
/// INSERT produce exactly the expected events, records and notifications.
#[tokio::test]
async fn track_table_publishes_row_changes() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let mut listener = Notifications::listen(&pg.url(), &["tw:todos"]).await;
    client
        .batch_execute(
            "create table public.todos (id integer primary key, title text not null, done boolean not null default false);
             select tidewire.track_table('public.todos', stream => 'todos', key_column => 'id');
             insert into todos (id, title) values (1, 'milk'), (2, 'eggs');
             update todos set done = true where id = 1;
             update todos set id = 20 where id = 2;
             delete from todos where id = 1;",
        )
        .await
        .expect("table changes");
    let expected = vec![
        event(
            1,
            "1",
            "upsert",
            Some(json!({"id": 1, "title": "milk", "done": false})),
        ),
        event(
            2,
            "2",
            "upsert",
            Some(json!({"id": 2, "title": "eggs", "done": false})),
        ),
        event(
            3,
            "1",
            "upsert",
            Some(json!({"id": 1, "title": "milk", "done": true})),
        ),
        event(4, "2", "delete", None),
        event(
            5,
            "20",
            "upsert",
            Some(json!({"id": 20, "title": "eggs", "done": false})),
        ),
        event(6, "1", "delete", None),
    ];
    assert_eq!(events(&client, "todos").await, expected);
    assert_eq!(
        records(&client, "todos").await,
        vec![(
            "20".to_owned(),
            5,
            Some(json!({"id": 20, "title": "eggs", "done": false}))
        )]
    );
    for wanted in &expected {
        let payload = listener.next_json(WAIT).await;
        assert_eq!(payload["seq"], wanted.seq);
        assert_eq!(payload["key"], wanted.key.as_str());
        assert_eq!(payload["op"], wanted.op.as_str());
        assert_eq!(payload["data"], wanted.data.clone().unwrap_or(json!(null)));
    }

    // A rolled-back write publishes nothing and leaves no hole.
    client
        .batch_execute("begin; insert into todos (id, title) values (3, 'gone'); rollback;")
        .await
        .expect("rolled back insert");
    // TRUNCATE fires no row triggers: every remaining key gets a delete.
    client
        .batch_execute("insert into todos (id, title) values (3, 'tea'); truncate todos;")
        .await
        .expect("truncate");
    let tail: Vec<(i64, String, String)> = events(&client, "todos")
        .await
        .into_iter()
        .skip(6)
        .map(|event| (event.seq, event.key, event.op))
        .collect();
    assert_eq!(
        tail,
        vec![
            (7, "3".to_owned(), "upsert".to_owned()),
            (8, "20".to_owned(), "delete".to_owned()),
            (9, "3".to_owned(), "delete".to_owned()),
        ]
    );
    assert!(records(&client, "todos").await.is_empty());
    assert_eq!(listener.drain(QUIET).await.len(), 3);

    // A NULL key is refused (the statement fails), and tracking needs a real column.
    client
        .batch_execute("create table public.loose (k text, v int); select tidewire.track_table('public.loose', 'loose', 'k');")
        .await
        .expect("track loose");
    let error = client
        .batch_execute("insert into loose values (null, 1)")
        .await
        .expect_err("null key");
    assert_eq!(sqlstate(&error), Some("23502"));
    let error = client
        .batch_execute("select tidewire.track_table('public.loose', 'loose', 'nope')")
        .await
        .expect_err("missing column");
    assert_eq!(sqlstate(&error), Some("42703"));
    let error = client
        .batch_execute("select tidewire.track_table('public.loose', 'raw:loose', 'k')")
        .await
        .expect_err("raw stream");
    assert_eq!(sqlstate(&error), Some("22023"));
}

/// After untrack_table the table's writes publish nothing; tracking again resumes the seq.
#[tokio::test]
async fn untrack_table_stops_publishing() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "create table items (sku text primary key, qty int);
             select tidewire.track_table('items', 'items', 'sku');
             insert into items values ('a', 1);",
        )
        .await
        .expect("tracked insert");
    let untracked: bool = client
        .query_one("select tidewire.untrack_table('items')", &[])
        .await
        .expect("untrack")
        .get(0);
    assert!(untracked);
    let again: bool = client
        .query_one("select tidewire.untrack_table('items')", &[])
        .await
        .expect("untrack twice")
        .get(0);
    assert!(!again, "second untrack reports nothing to do");
    client
        .batch_execute("insert into items values ('b', 2); update items set qty = 5; delete from items where sku = 'a'; truncate items;")
        .await
        .expect("untracked writes");
    assert_eq!(events(&client, "items").await.len(), 1);
    let triggers: i64 = client
        .query_one(
            "select count(*) from pg_trigger where tgrelid = 'items'::regclass and not tgisinternal",
            &[],
        )
        .await
        .expect("triggers")
        .get(0);
    assert_eq!(triggers, 0);
    let tracked: i64 = client
        .query_one("select count(*) from tidewire.tracked", &[])
        .await
        .expect("tracked")
        .get(0);
    assert_eq!(tracked, 0);

    client
        .batch_execute("select tidewire.track_table('items', 'items', 'sku'); insert into items values ('c', 3);")
        .await
        .expect("track again");
    let outbox = events(&client, "items").await;
    assert_eq!(
        outbox
            .iter()
            .map(|event| (event.seq, event.key.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "a"), (2, "c")]
    );
}

/// Schema, table and column names full of quotes, semicolons and `%` go through track_table,
/// the triggers and untrack_table without executing anything.
#[tokio::test]
async fn hostile_identifiers_are_safe() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let schema = r#"we"ird;schema"#;
    let table = r#"t'a"b;drop table victims;--"#;
    let column = r#"id";drop table victims;-- %I %L '"#;
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let qualified = format!("{}.{}", quote(schema), quote(table));
    client
        .batch_execute(&format!(
            "create table victims (x int);
             create schema {};
             create table {qualified} ({} text primary key, v int);",
            quote(schema),
            quote(column)
        ))
        .await
        .expect("hostile schema");
    client
        .execute(
            "select tidewire.track_table($1::text::regclass, 'hostile', $2)",
            &[&qualified, &column],
        )
        .await
        .expect("track hostile table");
    client
        .batch_execute(&format!(
            "insert into {qualified} values ('k''1', 1);
             update {qualified} set {col} = 'k2' where v = 1;
             delete from {qualified};",
            col = quote(column)
        ))
        .await
        .expect("hostile writes");
    let outbox: Vec<(String, String)> = events(&client, "hostile")
        .await
        .into_iter()
        .map(|event| (event.key, event.op))
        .collect();
    assert_eq!(
        outbox,
        vec![
            ("k'1".to_owned(), "upsert".to_owned()),
            ("k'1".to_owned(), "delete".to_owned()),
            ("k2".to_owned(), "upsert".to_owned()),
            ("k2".to_owned(), "delete".to_owned()),
        ]
    );
    let untracked: bool = client
        .query_one(
            "select tidewire.untrack_table($1::text::regclass)",
            &[&qualified],
        )
        .await
        .expect("untrack hostile")
        .get(0);
    assert!(untracked);
    // A hostile stream name is refused before any SQL is built from it.
    let error = client
        .execute(
            "select tidewire.track_table($1::text::regclass, $2, $3)",
            &[&qualified, &"x');drop table victims;--", &column],
        )
        .await
        .expect_err("hostile stream");
    assert_eq!(sqlstate(&error), Some("22023"));
    let victims_alive: bool = client
        .query_one("select to_regclass('public.victims') is not null", &[])
        .await
        .expect("victims")
        .get(0);
    assert!(victims_alive, "no injected statement ran");
}
