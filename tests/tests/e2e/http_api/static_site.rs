//! The static site the relay serves: content types, index files, caching headers, and no
//! way out of the root.

use super::*;

fn write(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create the directory");
    }
    std::fs::write(path, contents).expect("write a file");
}

/// The static site: content types, index files, caching headers, and no way out of the root.
#[tokio::test]
async fn static_files_are_served_safely() {
    let outside = tempfile::tempdir().expect("temp dir");
    let root = outside.path().join("site");
    write(&outside.path().join("secret.txt"), "secret");
    let files = [
        ("index.html", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("mod.mjs", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("pkg/tidewire_bg.wasm", "application/wasm"),
        ("data.json", "application/json"),
        ("icon.svg", "image/svg+xml"),
        ("logo.png", "image/png"),
        ("favicon.ico", "image/x-icon"),
        ("app.js.map", "application/json"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("docs/index.html", "text/html; charset=utf-8"),
    ];
    for (name, _) in files {
        write(&root.join(name), &format!("contents of {name}"));
    }
    write(&root.join(".env"), "hidden");
    write(&root.join("empty/placeholder"), "");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("escape.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(outside.path(), root.join("up")).expect("symlink");
    std::os::unix::fs::symlink(root.join("notes.txt"), root.join("alias.txt")).expect("symlink");

    let static_dir = root.clone();
    let relay = Relay::start(move |options| options.static_dir = Some(static_dir)).await;
    for (name, content_type) in files {
        let reply = relay.get(&format!("/{name}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{name}");
        assert_eq!(reply.text(), format!("contents of {name}"));
        let html = content_type.starts_with("text/html");
        assert_eq!(
            reply.header("cache-control") == Some("no-cache"),
            html,
            "{name}"
        );
    }
    let index = relay.get("/").await;
    assert_eq!(
        (index.status, index.text()),
        (StatusCode::OK, "contents of index.html".into())
    );
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let with_query = relay.get("/app.js?v=3").await;
    assert_eq!(with_query.text(), "contents of app.js");
    let docs = relay.get("/docs").await;
    assert_eq!(docs.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(docs.header("location"), Some("/docs/"));
    assert_eq!(
        relay.get("/docs/").await.text(),
        "contents of docs/index.html"
    );
    assert_eq!(
        relay.get("/alias.txt").await.text(),
        "contents of notes.txt"
    );

    // HEAD: headers without a body.
    let head = relay.send(Method::HEAD, "/app.js", &[], Bytes::new()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some("18"));
    assert!(head.body.is_empty());

    // Revalidation.
    let etag = relay
        .get("/style.css")
        .await
        .header("etag")
        .map(str::to_owned)
        .expect("etag");
    let again = relay
        .send(
            Method::GET,
            "/style.css",
            &[("if-none-match", &etag)],
            Bytes::new(),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());

    for path in [
        "/../Cargo.toml",
        "/../secret.txt",
        "/%2e%2e/",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/docs/../../secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/docs%2F..%2F..%2Fsecret.txt",
        "/..%5Csecret.txt",
        "/escape.txt",
        "/up/secret.txt",
        "/.env",
        "/empty/",
        "/missing.html",
        "/%00",
        "/%ff",
        "//secret.txt",
    ] {
        let reply = relay.get(path).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.text()
        );
        assert!(!reply.text().contains("secret"), "{path}");
    }
    relay.stop().await;
}
