//! `tidewire.track_table` with `{column}` stream templates and column lists: rows move
//! between partition streams, left-out columns never leave PostgreSQL, errors carry their
//! SQLSTATE, and `tidewire.tracked` and TRUNCATE follow the definition.

use serde_json::{json, Value};
use tidewire_tests::{sqlstate, Notifications, TestPg};
use tokio_postgres::Client;

use crate::support::{event, events, records, stream_row, QUIET, WAIT};

/// A board's tasks, with a column that must never be published.
const TASKS: &str = "create table public.tasks (
    id integer primary key,
    board_id integer,
    title text not null,
    done boolean not null default false,
    secret_notes text
);";

fn task(id: i32, board: i32, title: &str, done: bool) -> Value {
    json!({"id": id, "board_id": board, "title": title, "done": done})
}

/// Asserts that `stream` holds seqs 1..=n with no hole and that its row's seq is n; returns n.
async fn assert_gap_free(client: &Client, stream: &str) -> i64 {
    let seqs: Vec<i64> = events(client, stream)
        .await
        .iter()
        .map(|event| event.seq)
        .collect();
    let head = seqs.len() as i64;
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "{stream} has holes");
    assert_eq!(
        stream_row(client, stream).await.map(|row| row.1),
        Some(head),
        "{stream}'s seq"
    );
    head
}

/// Waits for `count` notifications, then for a quiet period with no more; returns them as
/// `(channel, payload)`.
async fn notifications(listener: &mut Notifications, count: usize) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for _ in 0..count {
        let notification = listener
            .recv(WAIT)
            .await
            .expect("a notification within the timeout");
        all.push((
            notification.channel().to_owned(),
            notification.payload().to_owned(),
        ));
    }
    for notification in listener.drain(QUIET).await {
        all.push((
            notification.channel().to_owned(),
            notification.payload().to_owned(),
        ));
    }
    all
}

/// The message of a statement PostgreSQL rejected.
fn message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_default()
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// An UPDATE of a placeholder column is a delete in the old stream and an upsert of the whole
/// published row in the new one; so is a key change across partitions, and a multi-row UPDATE
/// in one transaction. Every stream stays gap-free, on the wire too.
#[tokio::test]
async fn rows_move_between_partition_streams() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let streams = ["board:1/tasks", "board:2/tasks", "board:3/tasks"];
    let channels = streams.map(|stream| format!("tw:{stream}"));
    let mut listener = Notifications::listen(
        &pg.url(),
        &channels.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    client
        .batch_execute(&format!(
            "{TASKS}
             select tidewire.track_table('public.tasks', stream => 'board:{{board_id}}/tasks',
                                         key_column => 'id', exclude => array['secret_notes']);
             insert into tasks values (1, 1, 'milk', false, 's1'), (2, 1, 'eggs', false, 's2'),
                                      (3, 2, 'tea', false, 's3');
             update tasks set board_id = 2 where id = 1;
             update tasks set id = 30, board_id = 1 where id = 3;"
        ))
        .await
        .expect("inserts and moves");
    assert_eq!(
        events(&client, "board:1/tasks").await,
        vec![
            event(1, "1", "upsert", Some(task(1, 1, "milk", false))),
            event(2, "2", "upsert", Some(task(2, 1, "eggs", false))),
            event(3, "1", "delete", None),
            event(4, "30", "upsert", Some(task(30, 1, "tea", false))),
        ]
    );
    assert_eq!(
        events(&client, "board:2/tasks").await,
        vec![
            event(1, "3", "upsert", Some(task(3, 2, "tea", false))),
            event(2, "1", "upsert", Some(task(1, 2, "milk", false))),
            event(3, "3", "delete", None),
        ]
    );

    // Several rows move in one transaction, and one of them changes again.
    client
        .batch_execute(
            "begin;
             update tasks set board_id = 3, done = true where board_id = 1;
             update tasks set title = 'tea!' where id = 30;
             commit;",
        )
        .await
        .expect("multi-row move");
    let tail: Vec<_> = events(&client, "board:1/tasks")
        .await
        .into_iter()
        .skip(4)
        .collect();
    let mut left: Vec<_> = tail
        .iter()
        .map(|event| (event.key.as_str(), event.op.as_str(), event.data.clone()))
        .collect();
    left.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(left, vec![("2", "delete", None), ("30", "delete", None)]);
    let arrived = events(&client, "board:3/tasks").await;
    let mut moved: Vec<_> = arrived[..2]
        .iter()
        .map(|event| (event.key.as_str(), event.op.as_str(), event.data.clone()))
        .collect();
    moved.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(
        moved,
        vec![
            ("2", "upsert", Some(task(2, 3, "eggs", true))),
            ("30", "upsert", Some(task(30, 3, "tea", true))),
        ]
    );
    assert_eq!(
        arrived[2],
        event(3, "30", "upsert", Some(task(30, 3, "tea!", true)))
    );

    assert!(records(&client, "board:1/tasks").await.is_empty());
    assert_eq!(
        records(&client, "board:2/tasks").await,
        vec![("1".to_owned(), 2, Some(task(1, 2, "milk", false)))]
    );
    assert_eq!(
        records(&client, "board:3/tasks")
            .await
            .into_iter()
            .map(|(key, _, data)| (key, data))
            .collect::<Vec<_>>(),
        vec![
            ("2".to_owned(), Some(task(2, 3, "eggs", true))),
            ("30".to_owned(), Some(task(30, 3, "tea!", true))),
        ]
    );
    let mut heads = Vec::new();
    for stream in streams {
        heads.push(assert_gap_free(&client, stream).await);
    }
    assert_eq!(heads, vec![6, 3, 3]);

    // Every channel got its own stream's events, in seq order.
    let received = notifications(&mut listener, 12).await;
    assert_eq!(received.len(), 12);
    for (stream, head) in streams.iter().zip(&heads) {
        let seqs: Vec<i64> = received
            .iter()
            .filter(|(channel, _)| *channel == format!("tw:{stream}"))
            .map(|(_, payload)| {
                let payload: Value = serde_json::from_str(payload).expect("JSON payload");
                assert_eq!(payload["stream"], *stream);
                payload["seq"].as_i64().expect("seq")
            })
            .collect();
        assert_eq!(seqs, (1..=*head).collect::<Vec<_>>(), "{stream}");
    }
}

/// With `exclude` and with `columns`, a left-out column's values are in no event, record or
/// NOTIFY payload, and an UPDATE of only left-out columns publishes nothing.
#[tokio::test]
async fn left_out_columns_never_leave_postgres() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let channels = ["tw:ex:1", "tw:ex:2", "tw:col:1", "tw:col:2"];
    let mut listener = Notifications::listen(&pg.url(), &channels).await;
    client
        .batch_execute(&format!(
            "{TASKS}
             create table public.picked (like public.tasks including all);
             select tidewire.track_table('public.tasks', 'ex:{{board_id}}', 'id',
                                         exclude => array['secret_notes']);
             select tidewire.track_table('public.picked', 'col:{{board_id}}', 'id',
                                         columns => array['id', 'board_id', 'title']);"
        ))
        .await
        .expect("tracked tables");
    for table in ["tasks", "picked"] {
        client
            .batch_execute(&format!(
                "insert into {table} values (1, 1, 'milk', false, 'SECRET-a'),
                                            (2, 1, 'eggs', false, 'SECRET-b');"
            ))
            .await
            .expect("inserts");
        let before = count(&client, "select count(*) from tidewire.events").await;
        client
            .batch_execute(&format!("update {table} set secret_notes = 'SECRET-c';"))
            .await
            .expect("secret-only update");
        assert_eq!(
            count(&client, "select count(*) from tidewire.events").await,
            before,
            "an update of only left-out columns publishes nothing ({table})"
        );
        client
            .batch_execute(&format!(
                "update {table} set secret_notes = 'SECRET-d', title = 'milk!' where id = 1;
                 update {table} set board_id = 2, secret_notes = 'SECRET-e' where id = 2;
                 update {table} set id = 3, secret_notes = 'SECRET-f' where id = 2;
                 delete from {table} where id = 1;"
            ))
            .await
            .expect("updates, a move, a key change, a delete");
        assert_eq!(
            count(
                &client,
                &format!("select count(*) from {table} where secret_notes like 'SECRET-%'")
            )
            .await,
            1,
            "the table itself keeps its secret"
        );
    }
    // `columns` leaves `done` out too.
    assert_eq!(
        records(&client, "ex:2").await,
        vec![("3".to_owned(), 3, Some(task(3, 2, "eggs", false)))]
    );
    assert_eq!(
        records(&client, "col:2").await,
        vec![(
            "3".to_owned(),
            3,
            Some(json!({"id": 3, "board_id": 2, "title": "eggs"}))
        )]
    );
    for prefix in ["ex", "col"] {
        // Two inserts, the title update, the move (2 events), the key change (2), the delete.
        let published = assert_gap_free(&client, &format!("{prefix}:1")).await
            + assert_gap_free(&client, &format!("{prefix}:2")).await;
        assert_eq!(published, 8, "{prefix}");
    }
    for sql in [
        "select count(*) from tidewire.events where data::text like '%SECRET%' or data ? 'secret_notes'",
        "select count(*) from tidewire.records where data::text like '%SECRET%' or data ? 'secret_notes'",
        "select count(*) from tidewire.records where stream like 'col:%' and data ? 'done'",
    ] {
        assert_eq!(count(&client, sql).await, 0, "{sql}");
    }
    let received = notifications(&mut listener, 16).await;
    assert_eq!(received.len(), 16);
    for (channel, payload) in &received {
        assert!(
            !payload.contains("SECRET") && !payload.contains("secret_notes"),
            "{channel}: {payload}"
        );
    }
}

/// Every refused definition and every failing write returns its documented SQLSTATE and a
/// `tidewire:` message; a failing write publishes nothing at all.
#[tokio::test]
async fn refusals_have_their_sqlstate_and_publish_nothing() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "create table rooms (id integer primary key, room text, secret text, note text);",
        )
        .await
        .expect("table");
    let track = "select tidewire.track_table('rooms'";
    for (arguments, state, says) in [
        (", 'r:{room', 'id')", "22023", "unterminated placeholder"),
        (", 'r:{}', 'id')", "22023", "empty placeholder"),
        (", 'r:}', 'id')", "22023", "} without a {"),
        (", 'r:{a{room}}', 'id')", "22023", "{ inside a placeholder"),
        (
            ", 'r {room}', 'id')",
            "22023",
            "cannot make a valid stream name",
        ),
        (
            ", 'raw:{room}', 'id')",
            "22023",
            "cannot make a valid stream name",
        ),
        (
            ", '{room}' || repeat('x', 60), 'id')",
            "22023",
            "cannot make a valid stream name",
        ),
        (
            ", 'r:{nope}', 'id')",
            "42703",
            "has no column nope (a placeholder",
        ),
        (", 'r:{room}', 'nope')", "42703", "has no column nope"),
        (
            ", 'r:{room}', 'id', columns => array['id', 'room', 'nope'])",
            "42703",
            "has no column nope (named in columns)",
        ),
        (
            ", 'r:{room}', 'id', exclude => array['nope'])",
            "42703",
            "has no column nope (named in exclude)",
        ),
        (
            ", 'r:{room}', 'id', columns => array['id', 'room'], exclude => array['secret'])",
            "22023",
            "columns or exclude, not both",
        ),
        (
            ", 'r:{room}', 'id', columns => array['id', null])",
            "22023",
            "without NULL",
        ),
        (
            ", 'r:{room}', 'id', columns => array['id'])",
            "22023",
            "leaves out column room, a placeholder",
        ),
        (
            ", 'r:{room}', 'id', exclude => array['secret', 'id'])",
            "22023",
            "leaves out column id, the key column",
        ),
    ] {
        let sql = format!("{track}{arguments}");
        let error = client.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(sqlstate(&error), Some(state), "{sql}: {error:?}");
        let said = message(&error);
        assert!(
            said.starts_with("tidewire: ") && said.contains(says),
            "{sql}: {said}"
        );
    }
    assert_eq!(
        count(&client, "select count(*) from tidewire.tracked").await,
        0
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from pg_trigger where tgrelid = 'rooms'::regclass"
        )
        .await,
        0
    );

    client
        .batch_execute(
            "select tidewire.track_table('rooms', 'r:{room}', 'id', exclude => array['secret']);
             insert into rooms values (1, 'a', 's', 'n');",
        )
        .await
        .expect("tracked");
    let before = count(&client, "select count(*) from tidewire.events").await;
    assert_eq!(before, 1);
    for (sql, state, says) in [
        (
            "insert into rooms values (2, 'b', 's', 'n'), (3, null, 's', 'n')",
            "23502",
            "has a NULL in column room, a placeholder of stream template 'r:{room}'",
        ),
        (
            "insert into rooms values (2, 'b', 's', 'n'), (3, 'no good', 's', 'n')",
            "22023",
            "invalid stream name 'r:no good'",
        ),
        (
            "insert into rooms values (2, 'b', 's', 'n'), (3, repeat('x', 60), 's', 'n')",
            "22023",
            "invalid stream name",
        ),
    ] {
        let error = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&error), Some(state), "{sql}: {error:?}");
        let said = message(&error);
        assert!(
            said.starts_with("tidewire: ") && said.contains(says),
            "{sql}: {said}"
        );
    }
    assert_eq!(
        count(&client, "select count(*) from tidewire.events").await,
        before,
        "a failed write publishes nothing"
    );
    // A multi-row move whose second row makes an invalid name: the first row's delete and
    // upsert are rolled back with the statement.
    client
        .batch_execute("insert into rooms values (2, 'b', 's', 'n')")
        .await
        .expect("second room");
    let error = client
        .batch_execute(
            "update rooms set room = case id when 1 then 'c' else 'no good' end, note = 'moved'",
        )
        .await
        .expect_err("invalid name in a multi-row move");
    assert_eq!(sqlstate(&error), Some("22023"));
    // An excluded column renamed since track_table: the write is refused, not leaked.
    client
        .batch_execute("alter table rooms rename column secret to hidden")
        .await
        .expect("rename");
    let error = client
        .batch_execute("update rooms set hidden = 'leak', note = 'x' where id = 1")
        .await
        .expect_err("renamed excluded column");
    assert_eq!(sqlstate(&error), Some("42703"));
    assert!(message(&error).starts_with("tidewire: ") && message(&error).contains("exclude"));
    client
        .batch_execute("alter table rooms rename column hidden to secret")
        .await
        .expect("rename back");
    // A placeholder value that makes a raw channel name.
    client
        .batch_execute("select tidewire.track_table('rooms', '{room}:log', 'id')")
        .await
        .expect("template with a leading placeholder");
    let error = client
        .batch_execute("insert into rooms values (9, 'raw', 's', 'n')")
        .await
        .expect_err("raw channel");
    assert_eq!(sqlstate(&error), Some("22023"));
    assert!(message(&error).contains("raw pg_notify channel"));

    // Only the first insert and the second room's insert were published.
    let streams: Vec<String> = client
        .query("select name from tidewire.streams order by name", &[])
        .await
        .expect("streams")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(streams, vec!["r:a".to_owned(), "r:b".to_owned()]);
    assert_eq!(
        count(&client, "select count(*) from tidewire.events").await,
        2
    );
    assert_eq!(
        records(&client, "r:a").await,
        vec![(
            "1".to_owned(),
            1,
            Some(json!({"id": 1, "room": "a", "note": "n"}))
        )]
    );
}

/// `tidewire.tracked` shows the template and the column list, re-tracking replaces them,
/// untrack_table removes them; the three-argument form still works; TRUNCATE of a
/// partitioned table deletes every published row in every partition stream.
#[tokio::test]
async fn tracked_definition_untrack_and_truncate() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    client
        .batch_execute(&format!(
            "{TASKS}
             create table public.todos (id integer primary key, title text);
             select tidewire.track_table('public.todos', 'todos', 'id');
             insert into todos values (1, 'milk');
             -- Written before tracking: never published, so TRUNCATE has nothing to delete.
             insert into tasks values (99, 9, 'old', false, null);
             select tidewire.track_table('public.tasks', stream => 'board:{{board_id}}/tasks',
                                         key_column => 'id', exclude => array['secret_notes']);"
        ))
        .await
        .expect("tracked tables");
    let definitions = || async {
        client
            .query(
                "select tbl::text, stream, key_column, columns, exclude
                   from tidewire.tracked order by tbl::text",
                &[],
            )
            .await
            .expect("tracked")
            .iter()
            .map(|row| {
                (
                    row.get::<_, String>(0),
                    row.get::<_, String>(1),
                    row.get::<_, String>(2),
                    row.get::<_, Option<Vec<String>>>(3),
                    row.get::<_, Option<Vec<String>>>(4),
                )
            })
            .collect::<Vec<_>>()
    };
    let todos = (
        "todos".to_owned(),
        "todos".to_owned(),
        "id".to_owned(),
        None,
        None,
    );
    assert_eq!(
        definitions().await,
        vec![
            (
                "tasks".to_owned(),
                "board:{board_id}/tasks".to_owned(),
                "id".to_owned(),
                None,
                Some(vec!["secret_notes".to_owned()])
            ),
            todos.clone(),
        ]
    );
    assert_eq!(
        events(&client, "todos").await,
        vec![event(
            1,
            "1",
            "upsert",
            Some(json!({"id": 1, "title": "milk"}))
        )]
    );

    // Re-tracking replaces the definition.
    client
        .batch_execute(
            "select tidewire.track_table('public.tasks', 'board:{board_id}/tasks', 'id',
                                         columns => array['id', 'board_id', 'title', 'done']);",
        )
        .await
        .expect("re-track");
    let columns = ["id", "board_id", "title", "done"]
        .map(str::to_owned)
        .to_vec();
    assert_eq!(
        definitions().await,
        vec![
            (
                "tasks".to_owned(),
                "board:{board_id}/tasks".to_owned(),
                "id".to_owned(),
                Some(columns),
                None
            ),
            todos.clone(),
        ]
    );

    client
        .batch_execute(
            "insert into tasks values (1, 1, 'a', false, null), (2, 1, 'b', false, null),
                                      (3, 2, 'c', false, null), (4, 3, 'd', false, null),
                                      (5, 3, 'e', false, null);
             delete from tasks where id = 4;
             truncate tasks;",
        )
        .await
        .expect("writes and truncate");
    for (stream, expected) in [
        (
            "board:1/tasks",
            vec![
                (1, "1", "upsert"),
                (2, "2", "upsert"),
                (3, "1", "delete"),
                (4, "2", "delete"),
            ],
        ),
        (
            "board:2/tasks",
            vec![(1, "3", "upsert"), (2, "3", "delete")],
        ),
        (
            "board:3/tasks",
            vec![
                (1, "4", "upsert"),
                (2, "5", "upsert"),
                (3, "4", "delete"),
                (4, "5", "delete"),
            ],
        ),
    ] {
        let outbox = events(&client, stream).await;
        let got: Vec<(i64, &str, &str)> = outbox
            .iter()
            .map(|event| (event.seq, event.key.as_str(), event.op.as_str()))
            .collect();
        assert_eq!(got, expected, "{stream}");
        assert!(records(&client, stream).await.is_empty(), "{stream}");
        assert_gap_free(&client, stream).await;
    }
    assert_eq!(stream_row(&client, "board:9/tasks").await, None);

    // untrack_table removes the triggers and the definition.
    let untracked: bool = client
        .query_one("select tidewire.untrack_table('public.tasks')", &[])
        .await
        .expect("untrack")
        .get(0);
    assert!(untracked);
    assert_eq!(definitions().await, vec![todos]);
    assert_eq!(
        count(
            &client,
            "select count(*) from pg_trigger where tgrelid = 'public.tasks'::regclass"
        )
        .await,
        0
    );
    let before = count(&client, "select count(*) from tidewire.events").await;
    client
        .batch_execute("insert into tasks values (6, 1, 'f', false, null)")
        .await
        .expect("untracked insert");
    assert_eq!(
        count(&client, "select count(*) from tidewire.events").await,
        before
    );
}

/// Placeholder and excluded column names full of quotes, semicolons and `%` are only ever
/// identifiers: the writes publish to the right streams and nothing else runs.
#[tokio::test]
async fn hostile_placeholder_and_excluded_names_are_safe() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let table = r#""t'a"";drop table victims;--""#;
    let placeholder = r#"b";drop table victims;-- %I %L '"#;
    let hidden = r#"s'";drop table victims;--"#;
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    client
        .batch_execute(&format!(
            "create table victims (x int);
             create table {table} (id integer primary key, {} integer, {} text);",
            quote(placeholder),
            quote(hidden)
        ))
        .await
        .expect("hostile table");
    client
        .execute(
            "select tidewire.track_table($1::text::regclass, $2, 'id', exclude => array[$3])",
            &[&table, &format!("h:{{{placeholder}}}"), &hidden],
        )
        .await
        .expect("track hostile names");
    client
        .batch_execute(&format!(
            "insert into {table} values (1, 1, 'hidden'), (2, 1, 'hidden');
             update {table} set {p} = 2 where id = 2;
             truncate {table};",
            p = quote(placeholder)
        ))
        .await
        .expect("hostile writes");
    let keys = |stream: &'static str| {
        let client = &client;
        async move {
            events(client, stream)
                .await
                .into_iter()
                .map(|event| (event.key, event.op, event.data))
                .collect::<Vec<_>>()
        }
    };
    let row = |id: i32, board: i32| Some(json!({"id": id, placeholder: board}));
    assert_eq!(
        keys("h:1").await,
        vec![
            ("1".to_owned(), "upsert".to_owned(), row(1, 1)),
            ("2".to_owned(), "upsert".to_owned(), row(2, 1)),
            ("2".to_owned(), "delete".to_owned(), None),
            ("1".to_owned(), "delete".to_owned(), None),
        ]
    );
    assert_eq!(
        keys("h:2").await,
        vec![
            ("2".to_owned(), "upsert".to_owned(), row(2, 2)),
            ("2".to_owned(), "delete".to_owned(), None),
        ]
    );
    let victims_alive: bool = client
        .query_one("select to_regclass('public.victims') is not null", &[])
        .await
        .expect("victims")
        .get(0);
    assert!(victims_alive, "no injected statement ran");
}
